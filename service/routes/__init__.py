"""One router per resource: items, search, training, models, ops."""
