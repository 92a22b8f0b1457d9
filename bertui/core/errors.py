"""The one exception type that means "the user gave something bertui cannot use".

Its message is a single line that says what is wrong and, where possible, what to do. Clients
print it as it is (the CLI on stderr with exit 2, the TUI next to the field); never a traceback.
"""


class BadInput(Exception):
    """A user-facing, one-line problem with a model, a dataset or an option."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.field = field  # which input it is about: "model", "dataset", "epochs", ...
