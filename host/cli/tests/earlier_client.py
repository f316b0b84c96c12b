"""The earlier system's Python client, as its API document gives it.

    earlier_client.py ORBIT_URL

Credentials come the way `boto3.Session()` finds them; the test points
`AWS_SHARED_CREDENTIALS_FILE` and `AWS_PROFILE` at what `agentctl up` wrote.
Prints the health check and two dispatches (a routed intent, then one nobody
routed) as one JSON line each.

The class below is the document's, unchanged, except for the one line it
lacks: `import json` (its `dispatch` calls `json.dumps`).
"""

import json  # missing from the document's example
import sys

# --- the document's example, as written -------------------------------------
import boto3
import requests
from botocore.awsrequest import AWSRequest
from botocore.auth import SigV4Auth

class AgentRuntimeClient:
    def __init__(self, endpoint_url: str, region: str = 'us-east-1'):
        self.endpoint_url = endpoint_url
        self.region = region
        self.session = boto3.Session()

    def _sign_request(self, method: str, url: str, body: str = None) -> dict:
        """Sign request with SigV4"""
        request = AWSRequest(
            method=method,
            url=url,
            data=body
        )

        SigV4Auth(self.session.get_credentials(), 'execute-api', self.region).add_auth(request)

        return {
            'Authorization': request.headers['Authorization'],
            'X-Amz-Date': request.headers['X-Amz-Date']
        }

    def dispatch(self, intent: str = 'call_reasoning', context: dict = None) -> dict:
        """Dispatch a request"""
        url = f"{self.endpoint_url}/dispatch"
        payload = {
            'intent': intent,
            'context': context or {}
        }

        headers = self._sign_request('POST', url, json.dumps(payload))
        headers['Content-Type'] = 'application/json'

        response = requests.post(url, json=payload, headers=headers)
        return response.json()

    def health_check(self) -> dict:
        """Check service health"""
        url = f"{self.endpoint_url}/health"
        headers = self._sign_request('GET', url)

        response = requests.get(url, headers=headers)
        return response.json()
# --- end of the document's example ------------------------------------------

client = AgentRuntimeClient(sys.argv[1])
print(json.dumps(client.health_check()))
result = client.dispatch('call_reasoning', {'user_id': 'user123'})
print(json.dumps(result))
print(json.dumps(client.dispatch('never_routed', {'user_id': 'user123'})))
