"""An MCP client (the official MCP Python SDK's Client over streamable HTTP) that lists tools and calls the ones
named on the command line, printing one JSON line per result. Usage: client.py URL TOOL..."""
import asyncio
import json
import sys

from mcp import Client

ARGS = {"search_docs": {"query": "sidecars"}, "read_file": {"path": "README.md"}, "delete_repo": {"name": "ward"}}


async def main(url: str, tools: list[str]) -> None:
    async with Client(url) as client:
        listed = await client.list_tools()
        print(json.dumps({"tools": sorted(t.name for t in listed.tools)}), flush=True)
        for name in tools:
            try:
                result = await client.call_tool(name, ARGS.get(name, {}))
                text = " ".join(getattr(c, "text", "") for c in result.content)
                print(json.dumps({"call": name, "is_error": bool(result.is_error), "text": text}), flush=True)
            except Exception as err:  # the SDK raises on a JSON-RPC error answer
                code = getattr(getattr(err, "error", None), "code", None)
                print(json.dumps({"call": name, "error": str(err), "code": code}), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2:]))
