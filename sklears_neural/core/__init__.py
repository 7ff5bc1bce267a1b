"""The training core shared by every model family; it knows no family."""
