"""An MCP server built with the official MCP Python SDK (MCPServer, streamable HTTP) that records every tool call
it runs, so a test can prove a denied call never reached it. Usage: server.py PORT RECORD_FILE"""
import sys

from mcp.server import MCPServer

port, record = int(sys.argv[1]), sys.argv[2]
server = MCPServer("ward-test-tools")


def ran(name: str) -> None:
    with open(record, "a", encoding="utf-8") as f:
        f.write(name + "\n")


@server.tool()
def search_docs(query: str) -> str:
    """Search the documentation."""
    ran("search_docs")
    return f"results for {query}"


@server.tool()
def read_file(path: str) -> str:
    """Read a file."""
    ran("read_file")
    return f"contents of {path}"


@server.tool()
def delete_repo(name: str) -> str:
    """Delete a repository."""
    ran("delete_repo")
    return f"deleted {name}"


server.run("streamable-http", host="127.0.0.1", port=port)
