"""What storage raises that callers handle."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.storage.rows import ItemRow


class StorageError(RuntimeError):
    """The database cannot be opened or has an unexpected schema."""


class DuplicateContent(Exception):
    """An item with the same content hash exists; carries it."""

    def __init__(self, existing: ItemRow) -> None:
        super().__init__(f"item {existing.id} has the same content")
        self.existing = existing


class ConstraintViolation(Exception):
    """A write broke a constraint (a unique key, a reference): the transaction was
    rolled back. Either engine's integrity error arrives as this."""


class UnknownVersion(KeyError):
    """Vectors for a model version the database does not hold (deleted meanwhile)."""
