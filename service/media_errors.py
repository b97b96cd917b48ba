"""What a client (or a failed item's `error`) is told when a media file cannot be used."""

from __future__ import annotations

from model.media import MediaError
from service import errors

# MediaError.code -> the API error class with that code.
_MEDIA_ERRORS: dict[str, type[errors.ServiceError]] = {
    "unreadable_media": errors.UnreadableMedia,
    "unsupported_media": errors.UnsupportedMedia,
    "too_long": errors.TooLong,
    "too_large": errors.TooLarge,  # also ffmpeg out of its memory limit
    "decode_timeout": errors.UnreadableMedia,  # 422: wall-clock or CPU-time limit
}


def api_error(exc: MediaError) -> errors.ServiceError:
    cls = _MEDIA_ERRORS.get(exc.code, errors.UnreadableMedia)
    err = cls(exc.message, exc.detail or None)
    err.code = exc.code  # keep specific codes such as decode_timeout
    return err


def as_api_error(exc: Exception) -> errors.ServiceError:
    """The API error for a processing failure: a MediaError keeps its code; anything
    else (ModelError: input the model refuses; WorkerCrashed) is the file's fault."""
    if isinstance(exc, errors.ServiceError):
        return exc
    if isinstance(exc, MediaError):
        return api_error(exc)
    return errors.UnreadableMedia(str(exc))


def naming(err: errors.ServiceError, file_name: str, shown_as: str | None) -> errors.ServiceError:
    """`err` with the file called what its sender called it: media errors name the file
    the server holds (an upload's temporary file, a stored item's content hash), which
    means nothing to the person who sent holiday.mp4. Without a name of the sender's it
    is "the file"."""
    if not file_name or file_name not in err.message:
        return err
    quoted = f"'{shown_as}'" if shown_as else "the file"
    err.message = err.message.replace(f"'{file_name}'", quoted).replace(
        file_name, shown_as or "the file"
    )
    err.args = (err.message,)
    return err
