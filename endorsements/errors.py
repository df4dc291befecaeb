"""Errors raised by endorsement intake, validation and transitions.

Each class has a stable `code` and its HTTP status; `ems.api_errors` renders them in the
error envelope. Per-row problems inside a file are not exceptions: they are `ems.errors.ErrorDetail`s
(`endorsements.validation`, `endorsements.assessment`) stored as `BatchRowError` rows.
"""

from ems.errors import Conflict, EmsError, NotFound, PayloadTooLarge, ValidationFailed


class EndorsementInvalid(ValidationFailed):
    code = "endorsement_invalid"
    message = "The endorsement is invalid."


class EndorsementNotFound(NotFound):
    code = "endorsement_not_found"
    message = "No endorsement with this tracking id."


class BatchNotFound(NotFound):
    code = "batch_not_found"
    message = "No batch with this id."


class IllegalTransition(Conflict):
    code = "illegal_transition"
    message = "This state change is not allowed."


class UploadTooLarge(PayloadTooLarge):
    code = "upload_too_large"
    message = "The file is larger than the upload limit."


class UploadError(EmsError):
    """A whole-file problem found before anything is written."""

    status = 422
    code = "upload_invalid"
    message = "The file cannot be read."


class UploadEmpty(UploadError):
    code = "file_empty"
    message = "The file is empty."


class UploadNoRows(UploadError):
    code = "file_no_rows"
    message = "The file has a header but no data rows."


class UploadNotText(UploadError):
    code = "file_not_text"
    message = "The file is not a text file (it looks binary)."


class UploadEncodingUnsupported(UploadError):
    code = "file_encoding_unsupported"
    message = "The file looks like UTF-16 without a byte-order mark; save it as UTF-8 CSV."


class UploadHeaderInvalid(UploadError):
    code = "header_invalid"
    message = "The header row is not valid."


class UploadTemplateUnchanged(UploadError):
    code = "template_unchanged"
    message = (
        "This file holds only the template's example rows (employee codes starting with EXAMPLE-): "
        "replace them with your own changes, then upload it."
    )


class UploadTooManyRows(UploadError):
    code = "too_many_rows"
    message = "The file has more rows than the limit."


class UploadJsonInvalid(UploadError):
    code = "json_invalid"
    message = "The JSON body is not valid."


class UploadJsonNotArray(UploadError):
    code = "json_not_array"
    message = "The JSON body must be an array of row objects."


class UploadFormatUnknown(UploadError):
    code = "file_format_unknown"
    message = "The file format must be CSV or JSON."


# --- cancel and dead letters (endorsements/pipeline/cancel.py, dead_letters.py) ---


class EndorsementNotCancellable(Conflict):
    code = "endorsement_not_cancellable"
    message = "This endorsement can no longer be cancelled."


class InsurerHasEndorsement(Conflict):
    """The insurer's status call says it has the request: cancelling here would lie."""

    code = "insurer_has_endorsement"
    message = "The insurer has this endorsement; its answer was recorded instead."


class InsurerUnreachable(EmsError):
    status = 503
    code = "insurer_unreachable"
    message = "The insurer could not be asked whether it has this endorsement; try again later."


class EndorsementBusy(Conflict):
    code = "endorsement_busy"
    message = "A dispatch window of this endorsement's insurer is closing; try again in a few seconds."


class EndorsementNotRetryable(Conflict):
    code = "endorsement_not_retryable"
    message = "Only a FAILED endorsement can be retried."
