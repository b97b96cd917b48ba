"""The web page at `/` in real headless Chromium against a real `python -m service`.

Upload a clip through the page's form, find it by its transcript, play it in the
result's player, find similar, delete it; and the page's own error handling.
Fixtures `server` and `media` come from conftest.py (a random tiny model, so this
module keeps its collection to the one clip it uploads: exact matches only).

Moments run against their own server (a 25 s video with a timed transcript beside a
short clip): a result at a stretch of the long video starts its player there, marks the
stretch on its timeline and shows what is said there; its other stretches seek the
player; "Find similar from here" searches with the moment at the player's time.

The training panel runs against its own server (the trained default model, 24
narrated clips of the unseen world) and a real `python -m service.worker`: a job
started from the form trains, is followed live, makes a version that the service
switches to; the page rolls back, deletes, and cancels a queued job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import CHROMIUM, chromium_page, drop_file, open_page
from e2e_server import (
    Server,
    make_clip,
    make_picture,
    make_tone,
    running_server,
    start_worker,
)
from playwright.sync_api import Page, Route
from unseen_world_client import upload_world

from model.corpus.unseen import UnseenWorld, make_unseen_world

TRANSCRIPT = "a red ball bounces while a drum rolls"
TRAIN_STEPS = 20  # a few loss points to watch; ~1-2 min with the worker on 2 busy cores
JOB_TIMEOUT_MS = 360_000


@pytest.fixture
def page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (/usr/bin/chromium)")
    with chromium_page() as page:
        yield page


@pytest.mark.slow  # ~25 s with its share of model and server start-up on 2 busy cores
@pytest.mark.postgres_in_soak  # what the browser allows is the same on either engine
def test_web_page_works_under_its_content_security_policy(
    server: Server, media: dict[str, Path]
) -> None:
    """The page as a browser enforces its policy (no inline script, no eval, its own
    origin only): it loads, uploads, searches and plays, and nothing is refused."""
    with chromium_page(enforce_csp=True) as page:  # a refusal fails the block
        response = page.goto(server.url + "/")
        assert (
            response is not None
            and "frame-ancestors 'none'" in response.headers["content-security-policy"]
        )
        page.wait_for_selector("html[data-ready]")
        page.set_input_files("#upload-file", str(media["clip2"]))
        page.fill("#upload-transcript", "a policy check")
        page.click("#upload-submit")
        page.wait_for_selector("#upload-status[data-item-id]")
        item_id = page.get_attribute("#upload-status", "data-item-id")
        page.fill("#search-text", "a policy check")
        page.select_option("#search-target", "video")
        page.click("#search-submit")
        player = f'#results .card[data-item-id="{item_id}"] video'
        page.wait_for_selector(f"{player}[src]", state="attached")
        assert "/media" in (page.get_attribute(player, "src") or "")
    # Gone again: the module's other tests count what the server holds.
    assert httpx.delete(f"{server.url}/v1/items/{item_id}", timeout=30).status_code == 204


def test_upload_search_play_delete(page: Page, server: Server, media: dict[str, Path]) -> None:
    open_page(page, server.url)

    # Upload through the form: file, transcript, metadata; the progress bar fills.
    page.set_input_files("#upload-file", str(media["clip"]))
    page.fill("#upload-transcript", TRANSCRIPT)
    page.fill("#upload-metadata", json.dumps({"source": "e2e"}))
    page.click("#upload-submit")
    page.wait_for_function(
        "document.querySelector('#upload-status').dataset.itemId"
        " || !document.querySelector('#upload-error').hidden"
    )
    assert page.is_hidden("#upload-error"), page.text_content("#upload-error")
    item_id = page.get_attribute("#upload-status", "data-item-id")
    assert page.text_content("#upload-status").startswith("Added: video")
    assert page.eval_on_selector("#upload-progress", "p => p.value") == 100
    row = f'#item-list li[data-item-id="{item_id}"]'
    page.wait_for_selector(row)
    assert "e2e" in page.text_content(row)
    # Shown under the name it was uploaded with, beside its id.
    assert page.text_content(f"{row} .filename") == media["clip"].name
    assert page.get_attribute(f'{row} button:has-text("Delete")', "aria-label") == (
        f"Delete video “{media['clip'].name}”"
    )

    # The same bytes again: the API answers 200 with the stored item, and the page says so.
    page.set_input_files("#upload-file", str(media["clip"]))
    page.click("#upload-submit")
    page.wait_for_function(
        "document.querySelector('#upload-status').textContent.startsWith('Already')"
    )
    assert page.get_attribute("#upload-status", "data-item-id") == item_id

    # Search for it by its transcript; the result's video player appears.
    page.fill("#search-text", TRANSCRIPT)
    page.select_option("#search-target", "video")
    page.click("#search-submit")
    card = f'#results .card[data-item-id="{item_id}"]'
    page.wait_for_selector(f"{card} video[controls][playsinline]")
    status = page.text_content("#results-status")
    assert status.startswith(f"1 video for “{TRANSCRIPT}”"), status
    assert "space vat" in status and " ms" in status, status
    assert page.text_content(f"{card} .transcript") == TRANSCRIPT
    assert page.text_content(f"{card} .filename") == media["clip"].name

    # It plays: muted, so no autoplay policy stands in the way.
    video = page.query_selector(f"{card} video")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function(
        "v => v.currentTime > 0 && !v.paused && v.readyState >= 2", arg=video, timeout=15_000
    )

    # Sounds: the clip's sound track is found too; it re-runs the last text search.
    page.select_option("#search-target", "audio")
    page.wait_for_function(
        "s => document.querySelector('#results-status').textContent.startsWith(s)",
        arg="1 sound for",
    )
    page.wait_for_selector(card)

    # Find similar from the item itself: an item is never its own result.
    page.select_option("#search-target", "video")
    page.click(f'{row} button:has-text("Find similar")')
    page.wait_for_selector("#results .empty")
    assert page.text_content("#results-status").startswith(
        f"0 videos like video “{media['clip'].name}”"
    )
    # Another kind of result re-runs the search shown (it ran the last text search, and
    # a reload would run that text again).
    page.select_option("#search-target", "audio")
    page.wait_for_function(
        "s => document.querySelector('#results-status').textContent.startsWith(s)",
        arg=f"0 sounds like video “{media['clip'].name}”",
    )
    assert "q=" not in page.url

    # Query by example: drop the same clip on the search area; it finds the stored one.
    drop_file(page, "#search", f"/v1/items/{item_id}/media", "example.mp4")
    page.wait_for_function(
        "s => document.querySelector('#results-status').textContent.startsWith(s)",
        arg="1 sound like the example “example.mp4”",
    )
    assert "space va " in page.text_content("#results-status")
    page.wait_for_selector(f"{card} video")

    # Delete through the page, confirming the dialog: gone from the list and the API.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f'{row} button:has-text("Delete")')
    page.wait_for_selector(row, state="detached")
    assert httpx.get(f"{server.url}/v1/items/{item_id}", timeout=5).status_code == 404
    page.fill("#search-text", TRANSCRIPT)
    page.click("#search-submit")
    page.wait_for_selector("#results .empty")

    # Upload it again, processed in the background: 202, then the page polls the item.
    polled: list[str] = []
    page.on("request", lambda r: r.method == "GET" and polled.append(r.url))
    page.set_input_files("#upload-file", str(media["clip"]))
    page.check("#upload-background")
    page.click("#upload-submit")
    page.wait_for_function(
        "document.querySelector('#upload-status').textContent.startsWith('Received;')"
    )
    # The form is free while the server works: it was locked, its Cancel dead, until
    # the watch ended (up to 15 minutes for a long file).
    assert page.is_enabled("#upload-submit") and page.is_hidden("#upload-cancel")
    page.wait_for_function(
        "document.querySelector('#upload-status').dataset.itemId"
        " || !document.querySelector('#upload-error').hidden"
    )
    assert page.text_content("#upload-status").startswith("Added: video")
    new_id = page.get_attribute("#upload-status", "data-item-id")
    assert f"{server.url}/v1/items/{new_id}" in polled

    # "Find similar from here" before the player has loaded (a slow link, iOS): from
    # the stretch it is about to show, not from 0:00, which it reads until then.
    asked = page.evaluate(
        """async () => {
          const { momentParts } = await import('/static/moments.js');
          const media = document.createElement('div');
          media.append(document.createElement('video'));  // nothing loaded
          let asked = null;
          const result = { item: { id: 'x', kind: 'video', duration_s: 60 }, score: 0.5,
                           segment: { start_s: 30, end_s: 40 }, more_segments: [] };
          const parts = momentParts(result, media, { onMoment: (_, s, e) => { asked = [s, e]; } });
          parts.actions[0].click();
          return asked;
        }"""
    )
    assert asked == [30, 40]

    # Lengths as a person reads them (59.97 s was "60.0 s", 119.6 s "1 min 60 s").
    said = page.evaluate(
        "async () => { const { formatDuration } = await import('/static/render.js');"
        " return [4.04, 59.97, 119.6, 7384.2].map(formatDuration); }"
    )
    assert said == ["4.0 s", "1 min 00 s", "2 min 00 s", "2 h 03 min 04 s"]


def test_errors_are_explained(page: Page, server: Server, media: dict[str, Path]) -> None:
    open_page(page, server.url)

    # Metadata is checked before anything is sent.
    page.fill("#upload-metadata", '{"nested": {"a": 1}}')
    assert "flat" in page.text_content("#upload-metadata-error")
    page.fill("#upload-metadata", "")

    # A file ffmpeg cannot read: the API's own message is shown, not a bare status code.
    page.set_input_files("#upload-file", str(media["text_file"]))
    page.click("#upload-submit")
    page.wait_for_selector("#upload-error:not([hidden])")
    message = page.text_content("#upload-error")
    assert message and "server answered" not in message, message
    assert f"'{media['text_file'].name}' is not a media file" in message, message

    # An empty query is not sent; the user is told what to do.
    page.fill("#search-text", "")
    page.click("#search-submit")
    assert "Type a few words" in page.text_content("#results-status")

    # A search by example can be stopped while it is sent or answered: a large example
    # on a slow link had no way out but a reload.
    page.fill("#search-text", "red ball")
    page.click("#search-submit")
    page.wait_for_function(  # the module's server may hold an earlier test's clip
        "/^\\d+ videos? for “red ball”/.test(document.querySelector('#results-status').textContent)"
    )
    shown = page.text_content("#results-status")
    held: list[Route] = []

    def hold(route: Route) -> None:  # never answered
        held.append(route)

    page.route("**/v1/search/upload", hold)
    assert page.is_hidden("#search-cancel")
    page.set_input_files("#example-file", str(media["clip"]))
    page.wait_for_selector("#search-cancel:visible")
    page.wait_for_function("() => document.querySelector('#results').ariaBusy === 'true'")
    page.click("#search-cancel")
    assert page.text_content("#results-status") == f"Search cancelled. Shown: {shown}"
    page.wait_for_selector("#search-cancel", state="hidden")
    assert page.get_attribute("#results", "aria-busy") is None
    assert page.is_hidden("#results-error")
    assert page.evaluate("document.activeElement.id") == "results-status"
    # What is shown stays what a change of target or a reload runs again: the cancelled
    # example was sent again, and the address had lost the text search shown.
    assert "q=red+ball" in page.url
    page.select_option("#search-target", "audio")
    page.wait_for_function(
        "/^\\d+ sounds? for “red ball”/.test(document.querySelector('#results-status').textContent)"
    )
    assert len(held) == 1
    page.unroute("**/v1/search/upload")

    # A Cancel button that goes while it has the keyboard (an upload cancelled, or sent
    # whole) hands it to the status line beside it, not to the top of the page. (A
    # small upload is sent at once, so this is asked of the page's helper directly.)
    page.evaluate("document.querySelector('#upload-cancel').hidden = false")
    page.focus("#upload-cancel")
    page.evaluate(
        "async () => { const { hideKeepingFocus } = await import('/static/page.js');"
        " hideKeepingFocus(document.querySelector('#upload-cancel'),"
        " document.querySelector('#upload-status')); }"
    )
    assert page.is_hidden("#upload-cancel")
    assert page.evaluate("document.activeElement.id") == "upload-status"


@pytest.mark.postgres_in_soak  # the page's own logic; uploads on PostgreSQL are tested above
def test_several_files_upload_one_after_another_and_each_outcome_is_said(
    page: Page, server: Server, media: dict[str, Path], tmp_path: Path
) -> None:
    open_page(page, server.url)
    tones = [make_tone(tmp_path / f"several-{hz}.wav", hz) for hz in (1237, 1409)]
    chosen = [str(tones[0]), str(media["text_file"]), str(tones[1])]

    # A transcript belongs to one file: with several it is refused before anything is sent.
    page.fill("#upload-transcript", "words")
    page.set_input_files("#upload-file", chosen)
    assert page.text_content("#upload-status").startswith("3 files · ")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-error:not([hidden])")
    assert "A transcript belongs to one file" in page.text_content("#upload-error")
    page.fill("#upload-transcript", "")

    # Each is its own request; the one the server refuses is named with its reason, and
    # the others are added all the same.
    page.fill("#upload-metadata", '{"batch": "several", "take": 9007199254740993}')
    page.click("#upload-submit")
    page.wait_for_function(
        "document.querySelector('#upload-status').textContent.startsWith('3 files:')"
    )
    assert page.text_content("#upload-status") == "3 files: 2 added, 1 could not be added."
    assert page.eval_on_selector("#upload-progress", "p => p.value") == 100
    failures = page.query_selector_all("#upload-error .upload-failures li")
    assert len(failures) == 1
    reason = failures[0].text_content()
    assert reason.startswith(f"{media['text_file'].name} — '{media['text_file'].name}' is not")
    listed = httpx.get(f"{server.url}/v1/items", params={"limit": 1000}, timeout=10).json()
    added = {i["filename"]: i for i in listed["items"] if i["metadata"].get("batch")}
    assert sorted(added) == sorted(t.name for t in tones)
    assert {i["metadata"]["take"] for i in added.values()} == {9007199254740993}  # sent as typed
    for name in added:
        page.wait_for_selector(f'#item-list .filename:text-is("{name}")')

    # A metadata value in the collection shows the items sharing it, and only them.
    row = f'#item-list li[data-item-id="{added[tones[0].name]["id"]}"]'
    # A whole number JavaScript cannot hold is shown rounded, and offers no filter (it
    # would show the items of the number it was rounded to).
    assert page.text_content(f"{row} .meta .rounded") == "≈9007199254740992"
    assert page.eval_on_selector_all(f"{row} button.meta-filter", "bs => bs.length") == 1
    page.click(f'{row} button.meta-filter:text-is("several")')
    page.wait_for_selector("#items-filter:not([hidden])")
    assert page.text_content("#items-filter-text") == 'batch = "several"'
    page.wait_for_function(
        "document.querySelector('#items-status').textContent.startsWith('Showing 2 ')"
    )
    shown = page.eval_on_selector_all("#item-list .filename", "els => els.map(e => e.textContent)")
    assert sorted(shown) == sorted(t.name for t in tones)
    page.click("#items-filter-clear")
    page.wait_for_selector("#items-filter", state="hidden")
    page.wait_for_function("!document.querySelector('#items-status').classList.contains('busy')")
    everything = httpx.get(f"{server.url}/v1/items", params={"limit": 20}, timeout=10).json()
    assert page.eval_on_selector_all("#item-list li", "els => els.length") == len(
        everything["items"]
    )
    # A batch with a file refused keeps what was typed, to try again.
    assert json.loads(page.input_value("#upload-metadata")) == {
        "batch": "several", "take": 9007199254740993}  # fmt: skip

    # In the background: each row says "processing", then ends ready, without a reload.
    quiet = [make_tone(tmp_path / f"quiet-{hz}.wav", hz) for hz in (1511, 1601)]
    page.fill("#upload-metadata", "")
    page.check("#upload-background")
    page.set_input_files("#upload-file", [str(t) for t in quiet])
    page.click("#upload-submit")
    page.wait_for_function(
        "document.querySelector('#upload-status').textContent.startsWith('2 files:')"
    )
    assert "2 processing in the background" in page.text_content("#upload-status")
    page.wait_for_function(
        """names => names.every(name => [...document.querySelectorAll('#item-list li')].some(
             li => li.querySelector('.filename')?.textContent === name
               && !li.querySelector('.badge.status-processing')))""",
        arg=[t.name for t in quiet], timeout=120_000,
    )  # fmt: skip
    assert page.input_value("#upload-metadata") == "" and page.is_hidden("#upload-error")


def test_an_upload_processing_past_the_watch_is_listed_and_says_how_to_look_again(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """Past 15 minutes of processing the page stops watching an upload. It said the item
    "will show in the collection when it is ready", which nothing then refreshed, and
    never listed it."""
    page.clock.install()

    def still_processing(route: Route) -> None:
        if route.request.method != "GET" or not re.search(r"/v1/items/[^/]+$", route.request.url):
            route.fallback()
            return
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "status": "processing"})

    page.route("**/v1/items/*", still_processing)
    open_page(page, server.url)
    page.check("#upload-background")
    page.set_input_files("#upload-file", str(make_tone(tmp_path / "long-one.wav", 1999)))
    page.click("#upload-submit")
    page.wait_for_function(
        "/processing/i.test(document.querySelector('#upload-status').textContent)"
    )
    for _ in range(20):  # a minute at a time: each pending pause ends, its check runs
        page.clock.fast_forward(60_000)
        page.wait_for_timeout(150)
        if "after 15 minutes" in page.text_content("#upload-status"):
            break
    assert "listed in the collection as processing" in page.text_content("#upload-status")
    row = page.locator("#item-list li", has=page.locator(".filename", has_text="long-one.wav"))
    assert row.count() == 1 and row.locator(".badge.status-processing").count() == 1

    # One deleted while it was watched (its check answers 404) is not left listed as
    # processing (it was, and was even listed again when it had not been).
    def deleted(route: Route) -> None:
        if route.request.method != "GET" or not re.search(r"/v1/items/[^/]+$", route.request.url):
            route.fallback()
            return
        route.fulfill(status=404, json={"error": {"code": "not_found", "message": "no item"}})

    page.unroute("**/v1/items/*")
    page.route("**/v1/items/*", deleted)
    page.check("#upload-background")  # the form was reset after the first
    page.set_input_files("#upload-file", str(make_tone(tmp_path / "gone-soon.wav", 2099)))
    page.click("#upload-submit")
    page.wait_for_function(
        "/processing/i.test(document.querySelector('#upload-status').textContent)"
    )
    page.clock.fast_forward(2_000)  # its first check, after a second
    status = "document.querySelector('#upload-status').textContent"
    page.wait_for_function(f"/deleted while it was processed/.test({status})")
    gone = page.locator("#item-list li", has=page.locator(".filename", has_text="gone-soon.wav"))
    assert gone.count() == 0


def test_collection_pages_filters_and_texts(page: Page, server: Server, tmp_path: Path) -> None:
    # One more text item than a page holds (PAGE_SIZE = 20 in service/static/collection.js).
    texts = [f"note {i}: the blue cup falls on the wooden floor" for i in range(21)]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for text in texts:
            res = client.post("/v1/items/text", json={"text": text, "metadata": {"n": 1}})
            assert res.status_code == 201, res.text
    open_page(page, server.url)

    page.select_option("#items-kind", "text")
    rows = "#item-list li[data-kind='text']"
    count_is = "([sel, n]) => document.querySelectorAll(sel).length === n"
    page.wait_for_function(count_is, arg=[rows, 20])
    assert page.is_visible("#items-more")
    page.click("#items-more")  # waits for it to be enabled (a refresh may be in flight); focuses it
    page.wait_for_function(count_is, arg=[rows, 21])
    assert page.is_hidden("#items-more")
    # The button went with the last page: the keyboard goes on from the row it brought
    # (it was left on the page's top).
    assert page.evaluate("document.activeElement.matches('#item-list li.item-row')")
    assert page.locator("#item-list li").count() == 21  # the filter shows texts only

    # An upload joins the list where it belongs, without a reload that would drop the
    # pages loaded: a sound is not added to the texts shown...
    page.set_input_files("#upload-file", str(make_tone(tmp_path / "kept.wav", 1733)))
    page.click("#upload-submit")
    page.wait_for_selector("#upload-status[data-item-id]")
    added = page.get_attribute("#upload-status", "data-item-id")
    assert page.locator("#item-list li").count() == 21 and page.is_hidden("#items-more")
    # ...and is on top of everything, above the pages loaded.
    page.select_option("#items-kind", "")
    page.wait_for_function(count_is, arg=["#item-list li", 20])
    page.click("#items-more")
    page.wait_for_function("document.querySelectorAll('#item-list li').length > 20")
    before = page.locator("#item-list li").count()
    page.set_input_files("#upload-file", str(make_tone(tmp_path / "on-top.wav", 1777)))
    page.click("#upload-submit")
    page.wait_for_function(
        "a => (document.querySelector('#upload-status').dataset.itemId || a) !== a", arg=added
    )
    page.wait_for_function(count_is, arg=["#item-list li", before + 1])
    on_top = page.get_attribute("#item-list li:first-child", "data-item-id")
    assert on_top == page.get_attribute("#upload-status", "data-item-id")
    page.select_option("#items-kind", "text")
    page.wait_for_function(count_is, arg=[rows, 20])

    # Texts found by text search show their text.
    page.fill("#search-text", "blue cup")
    page.select_option("#search-target", "text")
    page.fill("#search-k", "30")
    page.click("#search-submit")
    page.wait_for_function("document.querySelectorAll('#results .card').length === 21")
    shown = page.locator("#results .card blockquote.text-item").all_text_contents()
    assert sorted(shown) == sorted(texts)

    # On a phone: one column of cards, nothing wider than the screen, big touch targets.
    page.set_viewport_size({"width": 390, "height": 844})
    layout = page.evaluate(
        """() => ({
          overflow: document.documentElement.scrollWidth - window.innerWidth,
          columns: new Set([...document.querySelectorAll('#results .card')]
            .map(c => Math.round(c.getBoundingClientRect().left))).size,
          smallest: Math.min(...[...document.querySelectorAll('button, select, input')]
            .filter(el => el.offsetParent !== null && !['checkbox', 'radio'].includes(el.type))
            .map(el => el.getBoundingClientRect().height)),
          // a radio button's touch target is its whole row, label included
          smallestOption: Math.min(...[...document.querySelectorAll('.option')]
            .map(el => el.getBoundingClientRect().height)),
        })"""
    )
    assert (layout["overflow"], layout["columns"]) == (0, 1), layout
    assert layout["smallest"] >= 44 and layout["smallestOption"] >= 44, layout
    # The key form, opened on a phone, lies on the screen (it hung off its left edge).
    page.click("#key-panel summary")
    box = page.eval_on_selector("#key-form", "f => f.getBoundingClientRect().toJSON()")
    assert box["left"] >= 0 and box["right"] <= 390 and box["width"] >= 300, box
    page.click("#key-panel summary")

    # Many players: only those near the screen ask for their media; the rest as they
    # come near (1,000 results asked for 1,000 media heads at once).
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(14):
            tone = make_tone(tmp_path / f"tone {i}.wav", 300 + 97 * i, seconds=1.0)
            with tone.open("rb") as f:
                res = client.post("/v1/items", params={"wait": "true", "asr": "false"},
                                  files={"file": (tone.name, f)})  # fmt: skip
            assert res.status_code == 201, res.text
    page.fill("#search-text", "a tone")
    page.select_option("#search-target", "audio")
    page.click("#search-submit")
    # The server is the module's: earlier tests' sounds and videos are found too.
    page.wait_for_function("document.querySelectorAll('#results .card audio').length >= 16")
    players = "#results .card :is(audio, video)"
    shown = page.locator(players).count()
    page.wait_for_selector("#results .card:first-child :is(audio, video)[src]", state="attached")
    with_source = f"document.querySelectorAll('{players}[src]').length"
    first = page.evaluate(with_source)
    assert 0 < first < shown
    page.evaluate("document.querySelector('#results .card:last-child').scrollIntoView()")
    page.wait_for_selector("#results .card:last-child :is(audio, video)[src]", state="attached")
    assert page.evaluate(with_source) > first

    # By keyboard, where the control pressed goes away: a deleted row's neighbour, the
    # filter's "Show all", then the list's heading (each was the page's top).
    focused = "document.activeElement.id || document.activeElement.dataset.itemId"
    listed = page.locator("#item-list li.item-row")
    after = listed.nth(1).get_attribute("data-item-id")
    page.once("dialog", lambda dialog: dialog.accept())
    listed.first.locator("button[aria-label^='Delete']").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"a => ({focused}) === a", arg=after)
    page.locator("#item-list li .meta-filter").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#items-filter:not([hidden])")
    assert page.evaluate(focused) == "items-filter-clear"
    page.keyboard.press("Enter")
    page.wait_for_selector("#items-filter", state="hidden")
    assert page.evaluate(focused) == "items-title"


# The long video's transcript: (start s, end s, text). Segments are 10 s every 5 s.
CUES = [
    (0, 5, "a red ball rolls in"),
    (5, 10, "a blue cup falls on the wooden floor"),
    (10, 15, "the small dog barks"),
    (15, 20, "a green moon"),
    (20, 25, "the drum rolls"),
]
LONG_S = 25.0


def said_in(start: float, end: float) -> str:
    """What the transcript says in a stretch: the cues that overlap it (as the service)."""
    return " ".join(text for a, b, text in CUES if a < end and b > start)


@pytest.fixture
def moments_server(tmp_path: Path, random_model: Path) -> Iterator[tuple[Server, dict]]:
    """A server holding a 25 s video (H.264/AAC) with a WebVTT transcript, cut into
    segments, and a short clip; yields it with the two items."""
    long_clip = make_clip(tmp_path / "long.mp4", "testsrc", 440, seconds=LONG_S)
    short_clip = make_clip(tmp_path / "short.mp4", "smptebars", 660)
    vtt = "WEBVTT\n\n" + "".join(
        f"00:00:{a:06.3f} --> 00:00:{b:06.3f}\n{text}\n\n" for a, b, text in CUES
    )
    with (
        running_server(tmp_path / "data", random_model, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        items = {}
        for name, path, transcript in [("long", long_clip, vtt), ("short", short_clip, "bars")]:
            res = client.post("/v1/items", data={"transcript": transcript},
                              files={"file": (path.name, path.read_bytes())})  # fmt: skip
            assert res.status_code == 201, res.text
            items[name] = res.json()
        yield server, items


def wait_for_answer(page: Page, description: str) -> None:
    """Wait until the search described so has answered: its status line is up and the
    list is no longer busy. The line reads "Searching <description>…" while the request
    is out and the previous answer's cards are still shown (CI once read those)."""
    page.wait_for_function(
        """s => {
          const status = document.querySelector('#results-status').textContent;
          return status.includes(s) && !status.startsWith('Searching')
            && !document.querySelector('#results').hasAttribute('aria-busy');
        }""",
        arg=description,
    )


# The band's left and right edges as fractions of the timeline's inner width.
_BAND_EDGES = """t => {
  const box = t.getBoundingClientRect();
  const band = t.querySelector(".timeline-band").getBoundingClientRect();
  const x = (v) => (v - box.left - t.clientLeft) / t.clientWidth;
  return [x(band.left), x(band.right)];
}"""

# Note where the player is when it next starts playing, and where its seeks land.
_WATCH_PLAYER = """v => {
  delete v.dataset.playedFrom;
  v.muted = true;
  v.addEventListener("playing", () => { v.dataset.playedFrom = v.currentTime; }, { once: true });
  v.addEventListener("seeked", () => { v.dataset.seekedTo = v.currentTime; });
}"""


@pytest.mark.slow  # ~20 s: a server of its own, a 25 s video ingested as 5 segments
def test_moments_play_at_their_stretch_and_find_similar_from_here(
    page: Page, moments_server: tuple[Server, dict]
) -> None:
    server, items = moments_server
    long_id, short_id = items["long"]["id"], items["short"]["id"]
    duration = items["long"]["duration_s"]
    assert duration == pytest.approx(LONG_S, abs=0.2)
    sent: list[dict] = []
    page.on(
        "request",
        lambda r: r.method == "POST" and r.url.endswith("/v1/search")
        and sent.append(r.post_data_json),
    )  # fmt: skip
    open_page(page, server.url)

    # "One result per item" off: every matching stretch is a result (a random model ranks
    # anything, so every segment of the long video comes back among 12).
    assert page.is_checked("#search-group")
    page.uncheck("#search-group")
    page.fill("#search-text", "the small dog barks")
    page.select_option("#search-target", "audio")
    page.click("#search-submit")
    card = f'#results .card[data-item-id="{long_id}"][data-start-s="10"]'
    page.wait_for_selector(card)
    assert sent[-1]["group"] is False and sent[-1]["target"] == "audio", sent[-1]
    assert "group=false" in page.url
    assert page.get_attribute(card, "data-end-s") == "20"
    short_card = f'#results .card[data-item-id="{short_id}"]'
    assert page.locator(f"{short_card} .moment").count() == 0  # a short item: no timeline
    assert page.locator(f"{short_card} button.from-here").count() == 1
    # Each card's buttons say which item they act on (a dozen identical names were read
    # out as a list of controls).
    names = page.eval_on_selector_all(
        f"{short_card} .card-actions button", "bs => bs.map(b => b.getAttribute('aria-label'))"
    )
    assert names and all(n and "“short" in n for n in names), names

    # The player waits at the stretch's start; the timeline marks 0:10–0:20 of 0:25; the
    # cue said there stands beside it, in place of the whole transcript.
    video = page.query_selector(f"{card} video")
    page.wait_for_function(
        "v => v.readyState >= 1 && Math.abs(v.currentTime - 10) < 0.5", arg=video
    )
    left, right = page.eval_on_selector(f"{card} .timeline", _BAND_EDGES)
    assert left == pytest.approx(10 / duration, abs=0.01)
    assert right == pytest.approx(20 / duration, abs=0.01)
    assert "0:10–0:20 of 0:25" in page.get_attribute(f"{card} .timeline", "aria-label")
    assert page.text_content(f"{card} .cue") == f"0:10–0:20 {said_in(10, 20)}"
    assert page.locator(f"{card} .transcript").count() == 0

    # Its play button plays from the start of the stretch.
    play = f'{card} .stretches button[aria-pressed="true"]'
    assert page.text_content(play) == "0:10–0:20"
    assert page.get_attribute(play, "aria-label").startswith("Play video “long.mp4” from 0:10")
    video.evaluate(_WATCH_PLAYER)
    page.click(play)
    page.wait_for_function(
        "v => v.dataset.playedFrom && !v.paused && v.currentTime > Number(v.dataset.playedFrom)",
        arg=video, timeout=15_000,
    )  # fmt: skip
    assert float(video.get_attribute("data-played-from")) == pytest.approx(10, abs=0.5)

    # "Find similar from here" at 0:12: the moment 0:12–0:22 is the query, in sounds as
    # before; the stretches of the video it overlaps are no answers to it.
    video.evaluate("v => { v.pause(); v.currentTime = 12; }")
    page.wait_for_function("v => !v.seeking && Math.abs(v.currentTime - 12) < 0.05", arg=video)
    page.click(f"{card} button.from-here")
    wait_for_answer(page, "like moment 0:12–0:22 of video “long.mp4”")
    # The button pressed went with the cards: the keyboard is at the answer's line.
    assert page.evaluate("document.activeElement.id") == "results-status"
    assert sent[-1] == {
        "query": {"item_id": long_id, "start_s": 12, "end_s": 22},
        "target": "audio", "k": 12, "group": False,
    }  # fmt: skip
    assert page.locator("#results .card").count() >= 1
    page.wait_for_selector(short_card)
    for start, end in page.eval_on_selector_all(
        f'#results .card[data-item-id="{long_id}"]',
        "cards => cards.map(c => [Number(c.dataset.startS), Number(c.dataset.endS)])",
    ):
        assert end <= 12 or start >= 22, (start, end)

    # One result per item again: it re-runs the search shown (the moment), grouped.
    asked = len(sent)
    page.check("#search-group")
    for _ in range(200):
        if len(sent) > asked:
            break
        page.wait_for_timeout(50)
    wait_for_answer(page, "like moment 0:12–0:22 of video “long.mp4”")
    assert sent[-1]["group"] is True and sent[-1]["query"]["item_id"] == long_id
    # The text search, grouped: the long video once, its further matching stretches as
    # buttons; one pressed from the keyboard seeks there.
    page.click("#search-submit")
    wait_for_answer(page, "for “the small dog barks”")
    assert sent[-1]["group"] is True and sent[-1]["query"] == {"text": "the small dog barks"}
    grouped = f'#results .card[data-item-id="{long_id}"]'
    assert page.locator(grouped).count() == 1
    at_segment = page.get_attribute(grouped, "data-start-s") is not None
    buttons = page.locator(f"{grouped} .stretches button")
    assert buttons.count() == 3 + at_segment  # more_segments: at most 3
    last = buttons.nth(buttons.count() - 1)
    start_label, end_label = last.text_content().split("–")
    start, end = (
        int(t.split(":")[0]) * 60 + int(t.split(":")[1]) for t in (start_label, end_label)
    )
    page.eval_on_selector(f"{grouped} video", _WATCH_PLAYER)
    last.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "([v, t]) => v.dataset.playedFrom && Math.abs(Number(v.dataset.seekedTo) - t) < 0.5",
        arg=[page.query_selector(f"{grouped} video"), start], timeout=15_000,
    )  # fmt: skip
    assert last.get_attribute("aria-pressed") == "true"
    assert page.get_attribute(f"{grouped} .moment", "data-start") == str(start)
    assert said_in(start, end) in page.text_content(f"{grouped} .cue")


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> UnseenWorld:
    """6 things × 4 narrated clips with pictures and sound (a few seconds to make)."""
    out = tmp_path_factory.mktemp("unseen") / "world"
    return make_unseen_world(
        out, combinations=6, uploads_per_combination=4, tests_per_combination=0
    )


def count_of(page: Page, selector: str) -> int:
    return int(page.eval_on_selector_all(selector, "els => els.length"))


# Make the page believe it is hidden (a background tab) or visible again.
_SET_HIDDEN = """hidden => {
  if (hidden) {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  } else {
    delete document.hidden;
    delete document.visibilityState;
  }
  document.dispatchEvent(new Event("visibilitychange"));
}"""

_POLLING_OR_DONE = """row => document.querySelector("#training").dataset.polling === "on"
  || document.querySelector(row)?.dataset.status === "succeeded" """

# [step, points] once the job's progress bar shows at least `step` of `steps` and its
# loss curve has a point.
_TRAINED_TO = """([progress, chart, steps, step]) => {
  const bar = document.querySelector(progress), fig = document.querySelector(chart);
  return bar && fig && bar.max === steps && bar.value >= step && Number(fig.dataset.points)
    && [bar.value, Number(fig.dataset.points)];
}"""

# The loss curve has more points than `points`, and the progress bar is past `step`
# (or gone: the job has ended meanwhile).
# Done: a job first seen at its last step (a warm machine trains 20 steps in seconds)
# has no more growing to show; its curve stays.
_GREW_OR_DONE = """([row, step, points]) => {
  const el = document.querySelector(row);
  if (el.dataset.status === "succeeded") return true;
  const bar = el.querySelector("progress.job-progress");
  const fig = el.querySelector("figure.loss-chart");
  return fig && Number(fig.dataset.points) > points && (!bar || bar.value > step);
}"""


@pytest.mark.slow  # ~2-3 min: a real 20-step job, then two version switches, on 2 cores
@pytest.mark.postgres_in_soak  # the page; jobs and switches on PostgreSQL: test_e2e_training
def test_training_panel_trains_switches_rolls_back_and_cancels(
    page: Page, tmp_path: Path, trained_model: Path, small_world: UnseenWorld
) -> None:
    with (
        running_server(tmp_path / "data", trained_model, tmp_path / "server.log",
                       MMV_SWITCH_POLL_S="0.5") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):  # fmt: skip
        upload_world(client, small_world, clients=2)
        first = client.get("/readyz").json()["model_version"]
        worker = start_worker(server.data_dir, Path("unused"), tmp_path / "worker.log",
                              MMV_WORKER_POLL_S="0.5")  # fmt: skip
        try:
            _train_from_the_page(page, server, client, first)
        except Exception:
            print("worker log:\n" + worker.log()[-3000:])
            raise
        finally:
            worker.stop()


def _train_from_the_page(page: Page, server: Server, client: httpx.Client, first: str) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    open_page(page, server.url)

    # The starting model: active, with its test-set figures; nothing to poll for.
    first_row = f'#model-list li[data-version="{first}"]'
    page.wait_for_selector(f'{first_row}[data-state="active"]')
    assert "R@10 on the 1000 clips of its test set" in page.text_content(first_row)
    assert page.text_content("#jobs-status") == "No training jobs yet."
    assert page.get_attribute("#training", "data-polling") == "off"

    # Steps are checked before anything is sent.
    page.fill("#train-steps", "0")
    page.click("#train-submit")
    assert "whole number" in page.text_content("#train-steps-error")
    assert count_of(page, "#job-list li") == 0

    # Start a job from the form: it is listed, queued then running, and polled.
    page.fill("#train-steps", str(TRAIN_STEPS))
    page.check("#train-init-active")
    page.check("#train-activate-auto")
    page.click("#train-submit")
    page.wait_for_selector("#job-list li")
    job_id = page.get_attribute("#job-list li", "data-job-id")
    row = f'#job-list li[data-job-id="{job_id}"]'
    assert f"{TRAIN_STEPS} steps" in page.text_content(row)
    page.wait_for_selector('#training[data-polling="on"]')

    # The progress bar and the loss curve follow the training, without a reload.
    progress = f"{row} progress.job-progress"
    chart = f"{row} figure.loss-chart"
    live = [progress, chart, TRAIN_STEPS]
    step, points = page.wait_for_function(
        _TRAINED_TO, arg=[*live, 1], timeout=JOB_TIMEOUT_MS
    ).json_value()
    assert "loss " in page.text_content(row) and "clips/s" in page.text_content(row)
    assert page.get_attribute(f"{chart} svg", "role") == "img"
    assert "Training loss of job" in page.text_content(f"{chart} svg title")

    # A second job waits behind it (one worker); cancel it from the page, confirming.
    page.fill("#train-steps", str(TRAIN_STEPS))
    page.check("#train-activate-manual")
    page.click("#train-submit")
    page.wait_for_function(
        "id => document.querySelector('#job-list li').dataset.jobId !== id", arg=job_id
    )
    queued_id = page.get_attribute("#job-list li", "data-job-id")
    queued = f'#job-list li[data-job-id="{queued_id}"]'
    assert page.get_attribute(queued, "data-status") == "queued"
    assert "waiting for the worker" in page.text_content(queued)
    dialogs: list[str] = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.click(f'{queued} button[data-key="cancel"]')
    page.wait_for_selector(f'{queued}[data-status="cancelled"]')
    assert dialogs and "has not started" in dialogs[0]
    assert "Cancelled before it started." in page.text_content(queued)
    assert client.get(f"/v1/training/jobs/{queued_id}").json()["status"] == "cancelled"

    # Hidden, the page stops polling; visible again, it looks at once and goes on.
    page.evaluate(_SET_HIDDEN, True)
    assert page.get_attribute("#training", "data-polling") == "off"
    page.wait_for_timeout(500)  # requests sent before it was hidden are reported
    seen = len(requests)
    page.wait_for_timeout(4500)  # two poll periods and more
    assert not [u for u in requests[seen:] if "/v1/training/jobs" in u], requests[seen:]
    page.evaluate(_SET_HIDDEN, False)
    # Polling again at once, unless the job ended while the page was hidden (a warm
    # machine trains the few steps in seconds): then nothing is left to poll for.
    page.wait_for_function(_POLLING_OR_DONE, arg=row)

    # The curve grows as the job trains (unless it was done by the time it was first seen).
    page.wait_for_function(_GREW_OR_DONE, arg=[row, step, points], timeout=JOB_TIMEOUT_MS)

    # It succeeds: the outcome, the loss curve and the before/after table stay shown.
    page.wait_for_selector(f'{row}[data-status="succeeded"]', timeout=JOB_TIMEOUT_MS)
    job = client.get(f"/v1/training/jobs/{job_id}").json()
    new = job["model_version"]
    assert new, job
    assert page.get_attribute(f"{row} details.job-details", "open") is not None
    directions = page.locator(f"{row} table.metrics-table tbody th").all_text_contents()
    assert directions == ["text → video", "text → audio", "video → audio", "audio → video"]
    assert page.get_attribute(chart, "data-last-step") == str(TRAIN_STEPS)
    new_row = f'#model-list li[data-version="{new}"]'
    if job["activated"]:  # as in nearly every run: the unseen world is learnt
        assert f"Made version {new}: at least as good" in page.text_content(row)
    else:
        # The held-out slice is 4 clips picked by a hash of the (random) item ids: on some
        # draws the serving version already ranks them all first and cannot be beaten.
        # The page then says why, and its button switches to the new version anyway.
        print(f"not activated: {job['error']}")
        assert f"Made version {new}; {job['error']}" in page.text_content(row)
        page.click(f'{new_row} button[data-key="activate"]')

    # The new version: its parent, its job, its held-out figures; the service switches.
    page.wait_for_selector(f'{new_row}[data-state="active"]', timeout=120_000)
    text = page.text_content(new_row)
    assert f"by job {job_id} · parent {first}" in text, text
    assert "R@1 on the job's" in text and "held-out clips" in text, text
    assert page.get_attribute(f"{first_row}", "data-state") == "inactive"
    page.wait_for_function(
        "v => document.querySelector('#server-status').textContent.includes(v)", arg=new
    )
    page.wait_for_selector('#training[data-polling="off"]')  # nothing moves any more

    # Roll back to the first version with its button; it serves again.
    rollback = f'{first_row} button[data-key="activate"]'
    assert page.text_content(rollback) == "Roll back to this version"
    page.click(rollback)
    page.wait_for_selector(f'{first_row}[data-state="active"]', timeout=120_000)
    assert client.get("/readyz").json()["model_version"] == first
    assert page.text_content(f'{new_row} button[data-key="activate"]') == "Use this version"
    page.wait_for_function(
        "v => document.querySelector('#server-status').textContent.includes(v)", arg=first
    )

    # Delete the new version, confirming: gone from the page and the API.
    page.once("dialog", lambda d: d.accept())
    page.focus(f'{new_row} button[data-key="delete"]')
    page.keyboard.press("Enter")  # by keyboard: its place goes to the row left, not the top
    page.wait_for_selector(new_row, state="detached")
    assert [m["version"] for m in client.get("/v1/models").json()["models"]] == [first]
    assert page.evaluate("document.activeElement.dataset.version") == first
    assert page.is_hidden("#models-error") and page.is_hidden("#jobs-error")

    # On a phone: the panel with its curve and table fits the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow == 0


# Jobs and versions in every state the panel explains, rendered by the page's own
# modules (no worker needed): the sentences a user reads for each.
_RENDER_STATES = """async () => {
  const { jobRow } = await import("/static/jobs.js");
  const { modelRow } = await import("/static/versions.js");
  const progress = { step: 0, steps: null, loss: null, eta_s: null, clips_per_s: null,
                     stage: null, history: [] };
  const job = (id, fields) => ({
    id, status: "succeeded", created_at: "2026-01-02T03:04:05Z", progress,
    metrics: {}, model_version: null, activated: false, error: null,
    request: { init: "active", steps: 20, activate: "auto" }, started_at: null,
    finished_at: null, cancel_requested: false, attempts: 1, data: {}, ...fields,
  });
  const jobs = [
    job("not-better", { model_version: "v2", error: "not activated: validation score 0.5 " +
      "is below the active model's 0.6 on 4 held-out clips" }),
    job("manual", { model_version: "v3", request: { activate: "manual" } }),
    job("failed", { status: "failed", error: "training failed: out of memory" }),
    job("stopped", { status: "cancelled", error: "cancelled while it ran" }),
    job("asked", { status: "running", cancel_requested: true,
                   progress: { ...progress, step: 3, steps: 20, stage: "training" } }),
    job("finishing", { status: "running", progress: { ...progress, step: 20, steps: 20,
      stage: "training", eta_s: 0, loss: 1.5, history: [[1, 3], [20, 1.5]] } }),
    job("again", { status: "queued", attempts: 1,
                   error: "its worker stopped responding; queued again" }),
    job("calibrating", { status: "running", progress: { ...progress, step: 20, steps: 20,
      stage: "finishing", eta_s: 0, loss: 1.5, history: [[1, 3], [20, 1.5]] } }),
    job("alone", { status: "queued", attempts: 0 }),
  ];
  const model = (version, fields) => ({
    version, active: false, state: "inactive", created_at: "2026-01-02T03:04:05Z",
    config: {}, metrics: {}, parent: null, job_id: null, reindex: null, ...fields,
  });
  const active = model("v1", { active: true, state: "active" });
  const opts = { active, pending: false, onActivate() {}, onCallOff() {}, onDelete() {},
                 open: true, onCancel() {}, workers: ["host:1"] };
  const models = [
    model("v4", { state: "activating", created_at: "2026-01-03T00:00:00Z", parent: "v1",
                  job_id: "j4", reindex: { to_version: "v4", done: 12, total: 48,
                                           stage: "embedding" } }),
    model("v0", { created_at: "2025-12-31T00:00:00Z",
                  metrics: { val: { candidates: 50, "text->video/R@1": 0.5 } } }),
    active,
  ];
  const text = (el) => el.textContent.replace(/\\s+/g, " ");
  return {
    jobs: Object.fromEntries(jobs.map((j) => [j.id, text(jobRow(j, opts))])),
    noWorker: text(jobRow(jobs.at(-1), { ...opts, workers: [] })),
    cancelDisabled: jobRow(jobs[4], opts).querySelector("button").disabled,
    models: Object.fromEntries(models.map((m) => [m.version, text(modelRow(m, opts))])),
    buttons: Object.fromEntries(models.map((m) => [m.version,
      [...modelRow(m, opts).querySelectorAll("button")].map((b) => b.textContent)])),
    progress: modelRow(models[0], opts).querySelector("progress").value,
  };
}"""


def test_training_panel_explains_every_state(page: Page, server: Server) -> None:
    open_page(page, server.url)
    page.wait_for_selector("#models-status:not(:empty)")
    shown = page.evaluate(_RENDER_STATES)
    jobs, models, buttons = shown["jobs"], shown["models"], shown["buttons"]
    assert "Made version v2; not activated: validation score 0.5 is below" in jobs["not-better"]
    assert "kept it inactive, as asked" in jobs["manual"]
    assert "Failed: Training failed: out of memory." in jobs["failed"]
    assert "Cancelled while it ran." in jobs["stopped"]
    assert "Cancelling: it stops at its next step" in jobs["asked"] and shown["cancelDisabled"]
    assert "the last step is done, the run is finishing" in jobs["finishing"]
    assert "left" not in jobs["finishing"]  # no "about 0 s left" while it finishes
    assert "Queued again (attempt 2): its worker stopped responding" in jobs["again"]
    assert "calibrating pictures and sounds, saving the run" in jobs["calibrating"]
    assert "left" not in jobs["calibrating"]
    assert "Queued: waiting for the worker to take it" in jobs["alone"]
    assert (
        "no training worker is running: start one with python -m service.worker"
        in shown["noWorker"]
    )
    assert "embedding the collection: 12 of 48 items" in models["v4"] and shown["progress"] == 12
    assert "by job j4 · parent v1" in models["v4"]
    assert "R@1 on 50 validation clips" in models["v0"]
    assert "No evaluation was recorded" in models["v1"]
    assert buttons == {
        "v4": ["Call off the switch"],
        "v0": ["Roll back to this version", "Delete"],
        "v1": [],
    }


@pytest.mark.postgres_in_soak  # keys come from the settings, never from storage
def test_training_panel_needs_keys_and_says_so(
    page: Page, tmp_path: Path, random_model: Path
) -> None:
    read_key = "reader-key-0123456789"
    keys = f"{read_key}:read,writer-key-9876543210:write"
    with running_server(
        tmp_path / "data", random_model, tmp_path / "server.log", MMV_API_KEYS=keys
    ) as server:
        page.clock.install()  # the page's timers run on, and can be moved on
        open_page(page, server.url)
        # Without a key: the panel's error boxes say what to do, and the key panel opens.
        page.wait_for_selector("#jobs-error:not([hidden])")
        assert "needs an API key" in page.text_content("#jobs-error")
        assert "needs an API key" in page.text_content("#models-error")
        assert page.get_attribute("#key-panel", "open") is not None
        # A read key lists; starting a job needs a write key.
        page.fill("#api-key", read_key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#model-list li[data-state='active']")
        assert page.is_hidden("#jobs-error") and page.is_hidden("#models-error")
        page.click("#train-submit")
        page.wait_for_selector("#train-error:not([hidden])")
        assert page.text_content("#train-error").startswith("Your API key may not do this")
        assert page.text_content("#jobs-status") == "No training jobs yet."

        # Idle, the page still looks every 30 s: a job another client queued shows up,
        # and the header's line is checked again.
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        writer = {"Authorization": "Bearer writer-key-9876543210"}
        queued = httpx.post(f"{server.url}/v1/training/jobs", headers=writer,
                            json={"steps": 3}, timeout=30).json()  # fmt: skip
        page.clock.fast_forward(3_000)
        page.wait_for_timeout(300)
        assert page.locator("#job-list li").count() == 0  # not polling every 2 s
        page.clock.fast_forward(28_000)
        page.wait_for_selector(f'#job-list li[data-job-id="{queued["id"]}"]')
        assert any(u.endswith("/readyz") for u in requests), requests
        # Cancelling it with the read key: refused, and the refusal stays on show (the
        # refresh that followed the action cleared it at once).
        page.once("dialog", lambda dialog: dialog.accept())
        page.click(f'#job-list li[data-job-id="{queued["id"]}"] button[data-key="cancel"]')
        page.wait_for_selector("#jobs-error:not([hidden])")
        page.clock.fast_forward(31_000)  # the idle poll after it, too
        page.wait_for_timeout(300)
        assert page.text_content("#jobs-error").startswith("Your API key may not do this")

        # Media with a key: a signed link the element streams (it was the whole file
        # downloaded with the header into a blob: first), and "Open file" through one.
        picture = make_picture(tmp_path / "keyed.png", source="smptehdbars")
        stored = httpx.post(
            f"{server.url}/v1/items", headers=writer,
            files={"file": ("keyed.png", picture.read_bytes())}, timeout=60,
        )  # fmt: skip
        assert stored.status_code == 201, stored.text
        page.click("#items-refresh")
        page.wait_for_function(
            "() => { const img = document.querySelector('#item-list .thumb img');"
            " return img && img.src.includes('/media?expires=') && img.complete"
            " && img.naturalWidth > 0; }"
        )
        page.fill("#search-text", "bars")
        page.select_option("#search-target", "image")
        page.click("#search-submit")
        page.wait_for_selector('#results .card a:text-is("Open file"):not([hidden])')
        href = page.get_attribute('#results .card a:text-is("Open file")', "href")
        assert href is not None and "signature=" in href
        assert httpx.get(server.url + href, timeout=10).content == picture.read_bytes()

        # A link past its hours (a page left open for days): a new one each time it
        # fails, at most once a minute (it was renewed once, then the player failed).
        def links_asked() -> int:
            return len([u for u in requests if "/media-link" in u])

        for _ in range(2):
            asked = links_asked()
            page.clock.fast_forward(61_000)
            page.eval_on_selector("#results .card img", "i => i.dispatchEvent(new Event('error'))")
            for _ in range(100):
                if links_asked() > asked:
                    break
                page.wait_for_timeout(50)
            assert links_asked() == asked + 1
            assert page.locator("#results .card .media-error").count() == 0

        # Several files with a read key: the first refusal stops the batch (each of the
        # others was sent and refused alike).
        tones = [str(make_tone(tmp_path / f"keyed-{hz}.wav", hz)) for hz in (1301, 1423, 1511)]
        page.set_input_files("#upload-file", tones)
        page.click("#upload-submit")
        page.wait_for_function(
            "document.querySelector('#upload-status').textContent.startsWith('Stopped')"
        )
        assert page.text_content("#upload-status") == (
            "Stopped after 1 file of 3: 1 could not be added."
        )
        assert "The rest were not sent: Your API key may not do this" in page.text_content(
            "#upload-error"
        )

        # The key cleared in another tab of the page: this one says so at once, and
        # what it lists is asked for again (refused now, and saying why).
        other = page.context.new_page()
        open_page(other, server.url)
        other.evaluate("localStorage.removeItem('mmv.apiKey')")
        page.wait_for_selector("#key-state:text-is('not set')")
        page.wait_for_selector("#models-error:not([hidden])")
        assert "needs an API key" in page.text_content("#models-error")
        # What the key listed is not left on show with its buttons, polled every 6 s.
        assert page.locator("#model-list li, #job-list li").count() == 0
        assert page.get_attribute("#training", "data-polling") == "off"
        other.close()
        # A key again: the jobs are the list, summed up, not each announced as news.
        page.fill("#api-key", read_key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector(f'#job-list li[data-job-id="{queued["id"]}"]')
        assert page.text_content("#jobs-status") == "1 job: 1 queued."

        # Storage blocked (private mode, blocked cookies): the key entered still works
        # for the page (it was dropped: every request 401, the key panel open again).
        blocked = page.context.new_page()
        blocked.add_init_script(
            "for (const f of ['getItem', 'setItem', 'removeItem']) Storage.prototype[f] ="
            " () => { throw new DOMException('blocked', 'SecurityError'); };"
        )
        open_page(blocked, server.url)
        blocked.wait_for_selector("#models-error:not([hidden])")
        blocked.fill("#api-key", read_key)
        blocked.click("#key-form button[type=submit]")
        blocked.wait_for_selector("#model-list li[data-state='active']")
        assert blocked.is_hidden("#models-error")
        blocked.close()
