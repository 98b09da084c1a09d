"""The one error type the engine raises for anything a user can get wrong."""


class EngineError(ValueError):
    """A bad model folder, weight file, config, media file or prompt.

    The message says what is wrong and, where there is one, what to do about it.
    """
