"""The web page at `/` in real headless Chromium against a real `python -m service`.

Upload a clip through the page's form, find it by its transcript, play it in the
result's player, find similar, delete it; and the page's own error handling.
Fixtures `server` and `media` come from conftest.py (a random tiny model, so this
module keeps its collection to the one clip it uploads: exact matches only).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import CHROMIUM, chromium_page, drop_file, open_page
from e2e_server import Server
from playwright.sync_api import Page

TRANSCRIPT = "a red ball bounces while a drum rolls"


@pytest.fixture
def page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (/usr/bin/chromium)")
    with chromium_page() as page:
        yield page


@pytest.mark.slow  # ~25 s with its share of model and server start-up on 2 busy cores
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
    assert page.text_content("#results-status").startswith(f"0 videos like video {item_id}")

    # Query by example: drop the same clip on the search area; it finds the stored one.
    page.fill("#search-text", "")  # so that changing the target re-runs no text search
    page.select_option("#search-target", "audio")
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
    page.wait_for_function(
        "document.querySelector('#upload-status').dataset.itemId"
        " || !document.querySelector('#upload-error').hidden"
    )
    assert page.text_content("#upload-status").startswith("Added: video")
    new_id = page.get_attribute("#upload-status", "data-item-id")
    assert f"{server.url}/v1/items/{new_id}" in polled


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

    # An empty query is not sent; the user is told what to do.
    page.fill("#search-text", "")
    page.click("#search-submit")
    assert "Type a few words" in page.text_content("#results-status")


def test_collection_pages_filters_and_texts(page: Page, server: Server) -> None:
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
    page.click("#items-more")
    page.wait_for_function(count_is, arg=[rows, 21])
    assert page.is_hidden("#items-more")
    assert page.locator("#item-list li").count() == 21  # the filter shows texts only

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
            .filter(el => el.offsetParent !== null && el.type !== 'checkbox')
            .map(el => el.getBoundingClientRect().height)),
        })"""
    )
    assert (layout["overflow"], layout["columns"]) == (0, 1), layout
    assert layout["smallest"] >= 44, layout
