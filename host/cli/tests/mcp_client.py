"""The official MCP Python SDK (`mcp`) as an agent would use it against Orbit.

    mcp_client.py http URL
        Streamable HTTP to URL (Orbit's `/mcp`), every request signed with
        botocore's SigV4 by an httpx2 auth (keys from SIGV4_ACCESS_KEY_ID
        and SIGV4_SECRET_ACCESS_KEY).

    mcp_client.py stdio AGENTCTL DATA_DIR ORBIT_URL
        stdio to `agentctl mcp`, which forwards to Orbit, signing with the
        stack's profile.

Lists the tools, then calls `keywords` (allowed), `triage` (denied to
`dev`), `approve-expense` with input that breaks its schema, and
`approve-expense` with input that fits. Prints one JSON object.
"""

import asyncio
import json
import os
import sys

import httpx2
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


class Sign(httpx2.Auth):
    """SigV4 over the exact bytes httpx2 sends, service `execute-api`."""

    requires_request_body = True

    def __init__(self, credentials):
        self.credentials = credentials

    def auth_flow(self, request):
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("authorization", "x-amz-date")
        }
        signed = AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers=headers
        )
        SigV4Auth(self.credentials, "execute-api", "us-east-1").add_auth(signed)
        for name in ("Authorization", "X-Amz-Date"):
            request.headers[name] = signed.headers[name]
        yield request


def outcome(result):
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": [block.text for block in result.content if hasattr(block, "text")],
    }


async def session(client):
    async with client:
        tools = await client.list_tools()
        return {
            "tools": {tool.name: tool.input_schema for tool in tools.tools},
            "allowed": outcome(
                await client.call_tool("keywords", {"text": "the fox saw the other fox", "top": 1})
            ),
            "denied": outcome(await client.call_tool("triage", {"text": "help"})),
            "invalid": outcome(await client.call_tool("approve-expense", {"amount": "lots"})),
            "fits": outcome(await client.call_tool("approve-expense", {"amount": 12})),
        }


def main():
    mode = sys.argv[1]
    if mode == "http":
        credentials = Credentials(
            os.environ["SIGV4_ACCESS_KEY_ID"], os.environ["SIGV4_SECRET_ACCESS_KEY"]
        )
        http = httpx2.AsyncClient(auth=Sign(credentials), timeout=30)
        client = Client(streamable_http_client(sys.argv[2], http_client=http))
    elif mode == "stdio":
        agentctl, data_dir, orbit = sys.argv[2:5]
        client = Client(
            StdioServerParameters(
                command=agentctl,
                args=["--data-dir", data_dir, "mcp", "--orbit", orbit],
            )
        )
    else:
        sys.exit(f"unknown mode {mode!r}")
    print(json.dumps(asyncio.run(session(client))))


if __name__ == "__main__":
    main()
