"""research-agent: an MCP client (official MCP Python SDK) that reaches the tools server through its own sidecar,
lists the tools it may use, calls one, then tries a tool its rules do not allow."""
import asyncio
import os
import urllib.request

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

SIDECAR = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"
URL = f"{SIDECAR}/v1.0/invoke/tools/method/mcp"
IDP = os.environ.get("IDP_URL", "http://127.0.0.1:6199")


def headers() -> dict:
    # ward run gives each app a token for its own sidecar; the tools server wants a token from the identity provider.
    with urllib.request.urlopen(f"{IDP}/token?sub=research-agent&aud=tools", timeout=10) as reply:
        out = {"authorization": f"Bearer {reply.read().decode()}"}
    if os.environ.get("DAPR_API_TOKEN"):
        out["dapr-api-token"] = os.environ["DAPR_API_TOKEN"]
    return out


async def main() -> None:
    for attempt in range(50):  # the server may still be starting
        try:
            async with httpx2.AsyncClient(headers=headers(), timeout=30) as http:
                async with Client(streamable_http_client(URL, http_client=http)) as client:
                    tools = await client.list_tools()
                    print("tools I can see:", sorted(t.name for t in tools.tools), flush=True)
                    result = await client.call_tool("search_docs", {"query": "sidecars"})
                    print("search_docs:", " ".join(c.text for c in result.content), flush=True)
                    try:
                        await client.call_tool("delete_repo", {"name": "ward"})
                        print("delete_repo: ran (this must never happen)", flush=True)
                    except Exception as err:  # the SDK raises on the JSON-RPC error the sidecar answers
                        print("delete_repo refused:", err, flush=True)
                    break
        except Exception as err:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
    # Without the identity provider's token the server's sidecar refuses before any MCP message is read.
    async with httpx2.AsyncClient(timeout=30) as http:
        plain = {"dapr-api-token": os.environ["DAPR_API_TOKEN"]} if os.environ.get("DAPR_API_TOKEN") else {}
        reply = await http.post(URL, headers=plain, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        print("without a token:", reply.status_code, reply.text, flush=True)
    print("research-agent done", flush=True)


asyncio.run(main())
