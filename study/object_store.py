"""Checks of an object-store storage path, made before Ray starts and within a bounded time.

pyarrow (through which Ray Tune writes) answers every fault of a store with an `OSError` whose text
holds the AWS error code; `store_problem` says the fault in words and names the fix. A store that
does not answer is given `CHECK_TIMEOUT_S` seconds in all; each request of the check is bounded too
(`results.storage.STORE_ATTEMPTS`), so no request is left running for long after the answer.
"""
from __future__ import annotations

import re
import threading
import uuid

import pyarrow.fs as pafs

from results.storage import StorePath, fault_detail

CHECK_TIMEOUT_S = 20.0
STORE_NAME = re.compile(r"[A-Za-z0-9._+=@-]+")
STORE_NAME_CHARACTERS = "letters A-Z and a-z, digits and . _ - + = @"
CREDENTIALS = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE for S3"
# pieces of pyarrow's error text -> what they mean
FAULTS = (
    (("NO_SUCH_BUCKET", "NoSuchBucket"), "the bucket {bucket!r} does not exist; create it first, or check the name"),
    (("NETWORK_CONNECTION", "Could not connect", "curlCode", "Couldn't resolve", "Connection refused"),
     "cannot reach the object store ({detail}); check the endpoint (AWS_ENDPOINT_URL, or endpoint_override= in "
     "the URI) and the network"),
    (("InvalidAccessKeyId", "SignatureDoesNotMatch", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
      "ExpiredToken", "No credentials", "MISSING_AUTHENTICATION_TOKEN", "UNRECOGNIZED_CLIENT"),
     "the store does not accept these credentials ({detail}); set " + CREDENTIALS),
    (("ACCESS_DENIED", "AccessDenied", "Forbidden", "403"),
     "access denied: these credentials may not write to {uri} ({detail}); use credentials that may read, write "
     "and delete objects there (" + CREDENTIALS + "), or another --storage-path"),
)


def describe_fault(err: Exception, uri: str, bucket: str) -> str:
    text, detail = str(err), fault_detail(err)
    for needles, message in FAULTS:
        if any(needle in text for needle in needles):
            return message.format(bucket=bucket, uri=uri, detail=detail)
    return f"{uri} cannot be written ({detail})"


def store_name_problem(name: str) -> str | None:
    """Why `name` cannot name an experiment in an object store; None when it can. Tune writes the folder
    under the name as typed, but a resumed study is found again from its URI, which Tune parses with
    urllib (`#` starts a fragment, `?` a query, `%2F` stays as typed) and pyarrow decodes: a name a URI
    would have to escape ends up as two folders, so only characters that need no escape are allowed."""
    if STORE_NAME.fullmatch(name):
        return None
    return (f"an experiment in an object store is named with {STORE_NAME_CHARACTERS} only, as a URI holds them "
            f"unescaped (got {name!r}); pick another --name")


def store_problem(uri: str, timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
    """What keeps a study from writing under `uri`, in words; None when a test object could be written,
    read back and removed there."""
    try:
        root = StorePath.from_uri(uri)
    except ValueError as err:
        return f"{err}; give a folder, or an object store's URI (s3://BUCKET/PATH, gs://BUCKET/PATH)"
    bucket = root.path.split("/", 1)[0]
    outcome: list[str | None] = []

    def check() -> None:
        probe = root / f".write-check-{uuid.uuid4().hex}"
        try:
            if root.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                outcome.append(f"the bucket {bucket!r} does not exist (or these credentials cannot see it); "
                               f"create it first, or check the name")
                return
            probe.write_bytes(b"balpoe-study write check\n")
            probe.read_bytes()
            probe.unlink()
            outcome.append(None)
        except Exception as err:  # pyarrow raises OSError with AWS's text, ArrowInvalid for bad options
            outcome.append(describe_fault(err, uri, bucket))

    worker = threading.Thread(target=check, name="storage-check", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        return (f"the object store did not answer within {timeout_s:g} s; check the endpoint "
                f"(AWS_ENDPOINT_URL, or endpoint_override= in the URI), the network and the credentials")
    return outcome[0]
