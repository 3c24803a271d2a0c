"""The one exception translation raises: the client's request cannot be expressed for Gemini."""


class TranslationError(ValueError):
    """An invalid Anthropic request; the message names the field, e.g. ``messages.2.content.0: ...``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
