"""The chat-model layer: the models agents think with (a local engine or an upstream), tool calls in and out."""
