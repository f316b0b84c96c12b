"""Standard AWS clients against Orbit, as themselves (run by sigv4.rs).

    clients.py twice URL KEY_ID SECRET BODY
        Signs one request with botocore's SigV4Auth and sends it twice: what
        two identical requests in the same second, or a same-second retry,
        put on the wire. Prints each status and body, one JSON line each.

    clients.py retry ENDPOINT KEY_ID SECRET BODY
        Calls Dispatch through a botocore client (a one-operation service
        model for Orbit, signing name `execute-api`) with botocore's standard
        retry mode, which retries a 503 by signing again. Prints the answer
        and the number of retries botocore made, as one JSON line.
"""

import json
import os
import sys
import tempfile

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session

SERVICE_MODEL = {
    "version": "2.0",
    "metadata": {
        "apiVersion": "2026-01-01",
        "endpointPrefix": "orbit",
        "protocol": "rest-json",
        "serviceFullName": "agent-runtime Orbit",
        "serviceId": "Orbit",
        "signatureVersion": "v4",
        "signingName": "execute-api",
        "uid": "orbit-2026-01-01",
    },
    "operations": {
        "Dispatch": {
            "name": "Dispatch",
            "http": {"method": "POST", "requestUri": "/dispatch"},
            "input": {"shape": "DispatchRequest"},
            "output": {"shape": "DispatchResponse"},
        }
    },
    "shapes": {
        "DispatchRequest": {
            "type": "structure",
            "required": ["plugin"],
            "members": {
                "plugin": {"shape": "String"},
                "intent": {"shape": "String"},
                "input": {"shape": "Document"},
            },
        },
        "DispatchResponse": {
            "type": "structure",
            "members": {
                "status": {"shape": "String"},
                "output": {"shape": "Document"},
            },
        },
        "String": {"type": "string"},
        "Document": {"type": "structure", "members": {}, "document": True},
    },
}


def twice(url, key_id, secret, body):
    request = AWSRequest(
        method="POST",
        url=url,
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    SigV4Auth(Credentials(key_id, secret), "execute-api", "us-east-1").add_auth(request)
    prepared = request.prepare()
    session = URLLib3Session()
    for _ in range(2):
        response = session.send(prepared)
        print(json.dumps({"status": response.status_code, "body": response.text}))


def retry(endpoint, key_id, secret, body):
    with tempfile.TemporaryDirectory() as models:
        version_dir = os.path.join(models, "orbit", "2026-01-01")
        os.makedirs(version_dir)
        with open(os.path.join(version_dir, "service-2.json"), "w") as f:
            json.dump(SERVICE_MODEL, f)
        session = botocore.session.get_session()
        session.get_component("data_loader").search_paths.insert(0, models)
        client = session.create_client(
            "orbit",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )
        answer = client.dispatch(**json.loads(body))
        print(
            json.dumps(
                {
                    "status": answer["status"],
                    "output": answer.get("output"),
                    "retries": answer["ResponseMetadata"]["RetryAttempts"],
                }
            )
        )


if __name__ == "__main__":
    {"twice": twice, "retry": retry}[sys.argv[1]](*sys.argv[2:])
