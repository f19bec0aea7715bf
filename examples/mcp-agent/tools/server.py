"""tools: an MCP server (official MCP Python SDK, streamable HTTP) with one harmless and one dangerous tool."""
import os

from mcp.server import MCPServer

server = MCPServer("tools")


@server.tool()
def search_docs(query: str) -> str:
    """Search the documentation."""
    print(f"search_docs ran for {query!r}", flush=True)
    return f"3 pages mention {query}"


@server.tool()
def read_file(path: str) -> str:
    """Read a file from the docs tree."""
    print(f"read_file ran for {path!r}", flush=True)
    return f"(contents of {path})"


@server.tool()
def delete_repo(name: str) -> str:
    """Delete a repository. Never reachable by research-agent: its sidecar refuses the call."""
    print(f"delete_repo RAN for {name!r}", flush=True)
    return f"deleted {name}"


server.run("streamable-http", host="127.0.0.1", port=int(os.environ.get("APP_PORT", "6101")))
