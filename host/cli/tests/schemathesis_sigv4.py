"""Schemathesis hooks: sign every request with SigV4, as any AWS client does.

Loaded with `SCHEMATHESIS_HOOKS=schemathesis_sigv4` (this directory on
`PYTHONPATH`); the keys come from `SIGV4_ACCESS_KEY_ID` and
`SIGV4_SECRET_ACCESS_KEY`.

The signature covers the exact bytes sent, so it is made by a `requests`
auth on the prepared request (botocore's `SigV4Auth`, service
`execute-api`). Schemathesis decides which requests carry credentials: the
auth provider below marks those in `Authorization`, and only a marked
request is signed. Its probes (the `ignored_auth` and missing-header
checks) drop the mark or replace it with a made-up value, and go out
unsigned, to be refused.
"""

import os
import uuid

import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# What the provider puts in `Authorization` for `Sign` to replace.
MARK = "sigv4-sign-me"

CREDENTIALS = Credentials(
    os.environ["SIGV4_ACCESS_KEY_ID"], os.environ["SIGV4_SECRET_ACCESS_KEY"]
)


class Sign(requests.auth.AuthBase):
    """Signs a prepared request in place."""

    def __call__(self, request):
        if request.headers.get("Authorization") != MARK:
            return request
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("authorization", "x-amz-date")
        }
        # Axon accepts each signature once, and asks each request to sign
        # an id of its own (Orbit ignores it).
        headers["X-Orbit-Request-ID"] = str(uuid.uuid4())
        signed = AWSRequest(
            method=request.method, url=request.url, data=request.body or b"", headers=headers
        )
        SigV4Auth(CREDENTIALS, "execute-api", "us-east-1").add_auth(signed)
        request.headers.update(dict(signed.headers.items()))
        return request


@schemathesis.auth()
class SigV4:
    """The run's credentials: signed per request by `Sign`."""

    def get(self, case, context):
        return MARK

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": data}


@schemathesis.hook
def before_call(context, case, kwargs):
    kwargs["auth"] = Sign()
