"""Moved to ``cdface.data.image_sources`` (it reads only data/ formats, and `cdface detect` uses it too).

Kept for ``inference/cli.py`` until it imports the new home; nothing else imports this module.
"""

from cdface.data.image_sources import ImageSource, is_image_file, resolve_image_source

__all__ = ["ImageSource", "resolve_image_source", "is_image_file"]
