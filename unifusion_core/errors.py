"""One exception type for every user-facing failure: a single sentence, expected vs found."""


class UniFusionError(ValueError):
    """A problem with the user's input, files or models, stated in one sentence.

    Nodes show ``str(err)`` as-is, so the message must name what was expected, what was found and,
    where a file is involved, its path.
    """


# ComfyUI shows an error's type as module + name; under a custom-node package the module would read
# "<pack folder>.unifusion_core.errors". One short, stable name instead:
UniFusionError.__module__ = "unifusion"
