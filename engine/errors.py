class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidRequestError(EngineError, ValueError):
    """A request the engine refuses at add_request: bad prompt, bad sampling values."""


class ContextLengthError(InvalidRequestError):
    """Prompt plus max_tokens does not fit the model's context."""


class ModelLoadError(EngineError):
    """A model folder that is missing, incomplete or of an unsupported architecture."""
