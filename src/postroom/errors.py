"""Domain errors. They carry no HTTP: ``postroom.http.problems`` maps them to statuses.

Each has a stable ``code`` clients can switch on and a message that says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass


class PostroomError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(PostroomError):
    code = "configuration"


class NotFound(PostroomError):
    code = "not_found"

    def __init__(self, resource: str, identifier: object | None = None) -> None:
        detail = (
            f"{resource} not found" if identifier is None else f"{resource} {identifier} not found"
        )
        super().__init__(detail)
        self.resource = resource


class Conflict(PostroomError):
    """The request clashes with the current state (uniqueness, a state machine)."""

    code = "conflict"


class StateConflict(Conflict):
    code = "invalid_state"

    def __init__(self, resource: str, status: str, action: str) -> None:
        super().__init__(f"cannot {action} a {resource} whose status is '{status}'")
        self.status = status


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    message: str
    code: str = "invalid"


class ValidationFailed(PostroomError):
    code = "validation_failed"

    def __init__(
        self, problems: list[FieldProblem], message: str = "the request is invalid"
    ) -> None:
        super().__init__(message)
        self.problems = problems

    @classmethod
    def single(cls, field: str, message: str, code: str = "invalid") -> ValidationFailed:
        return cls([FieldProblem(field, message, code)], message)


class Unauthenticated(PostroomError):
    code = "unauthenticated"


class PermissionDenied(PostroomError):
    code = "forbidden"


class MissingScope(PermissionDenied):
    code = "missing_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this key lacks the scope '{scope}'")
        self.scope = scope


class IdempotencyInFlight(Conflict):
    code = "idempotency_in_flight"


class IdempotencyMismatch(ValidationFailed):
    code = "idempotency_key_reused"


class PayloadTooLarge(PostroomError):
    code = "payload_too_large"
