"""The chat-model layer: OpenAI messages to engine prompts, tool calls in and out."""
