"""The PySide6 desktop interface: widgets, item models and controllers over the core."""
