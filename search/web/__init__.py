"""The Space: start-up, the page (layout, handlers, rendering, links, assets), the Gradio API and MCP tools, REST,
uploads and request limits. The only wing that imports gradio or fastapi."""
