"""Redfish error bodies (DSP0266 §9.6) with Base message registry messages."""

from __future__ import annotations

from typing import Any

BASE_REGISTRY = "Base.1.19"

# MessageId -> (message template, severity, resolution); templates take MessageArgs in order.
_MESSAGES: dict[str, tuple[str, str, str]] = {
    "ResourceNotFound": (
        "The requested resource of type {0} named '{1}' was not found.",
        "Critical",
        "Provide a valid resource identifier and resubmit the request.",
    ),
    "ResourceMissingAtURI": (
        "The resource at the URI '{0}' was not found.",
        "Critical",
        "Place a valid resource at the URI or correct the URI and resubmit the request.",
    ),
    "OperationNotAllowed": (
        "The HTTP method is not allowed on this resource.",
        "Critical",
        "None.",
    ),
    "PropertyValueOutOfRange": (
        "The value '{0}' for the property {1} is not in the supported range of acceptable values.",
        "Warning",
        "Correct the value for the property in the request body and resubmit the request.",
    ),
    "PropertyValueTypeError": (
        "The value '{0}' for the property {1} is not a type that the property can accept.",
        "Warning",
        "Correct the value for the property in the request body and resubmit the request.",
    ),
    "PropertyNotWritable": (
        "The property {0} is a read-only property and cannot be assigned a value.",
        "Warning",
        "Remove the property from the request body and resubmit the request.",
    ),
    "PropertyUnknown": (
        "The property {0} is not in the list of valid properties for the resource.",
        "Warning",
        "Remove the unknown property from the request body and resubmit the request.",
    ),
    "PropertyMissing": (
        "The property {0} is a required property and must be included in the request.",
        "Warning",
        "Ensure that the property is in the request body and has a valid value.",
    ),
    "ActionParameterValueNotInList": (
        "The value '{0}' for the parameter {1} in the action {2} is not in the list of "
        "acceptable values.",
        "Warning",
        "Choose a value from the enumeration list and resubmit the request.",
    ),
    "MalformedJSON": (
        "The request body submitted was malformed JSON and could not be parsed by the "
        "receiving service.",
        "Critical",
        "Ensure that the request body is valid JSON and resubmit the request.",
    ),
    "NoValidSession": (
        "There is no valid session established with the implementation.",
        "Critical",
        "Establish a session before attempting any operations.",
    ),
    "PreconditionFailed": (
        "The ETag supplied did not match the current ETag of the resource.",
        "Critical",
        "Try the operation again using the appropriate ETag.",
    ),
    "SessionLimitExceeded": (
        "The session establishment failed due to the number of simultaneous sessions "
        "exceeding the limit of the implementation.",
        "Critical",
        "Reduce the number of other sessions before trying to establish the session or "
        "increase the limit of simultaneous sessions, if supported.",
    ),
    "Success": ("The request completed successfully.", "OK", "None."),
}


class RedfishHTTPError(Exception):
    """Raised by request handlers; turned into an HTTP status and a Redfish error body."""

    def __init__(self, status: int, message_id: str, *args: object) -> None:
        if message_id not in _MESSAGES:
            raise KeyError(f"unknown Base message {message_id!r}")
        self.status = status
        self.message_id = message_id
        self.args_text = [str(a) for a in args]
        super().__init__(message(message_id, *args)["Message"])


def message(message_id: str, *args: object) -> dict[str, Any]:
    """One `Message` object of the Base registry."""
    template, severity, resolution = _MESSAGES[message_id]
    text_args = [str(a) for a in args]
    return {
        "@odata.type": "#Message.v1_3_0.Message",
        "MessageId": f"{BASE_REGISTRY}.{message_id}",
        "Message": template.format(*text_args),
        "MessageArgs": text_args,
        "MessageSeverity": severity,
        "Resolution": resolution,
    }


def error_body(error: RedfishHTTPError) -> dict[str, Any]:
    info = message(error.message_id, *error.args_text)
    return {
        "error": {
            "code": info["MessageId"],
            "message": info["Message"],
            "@Message.ExtendedInfo": [info],
        }
    }
