"""Content and messaging providers. The sandbox ones are the defaults; HTTP ones come later."""
