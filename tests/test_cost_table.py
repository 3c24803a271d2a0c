"""The README's cost table, row by row: three answers of Gemini 2.5 Pro on Vertex (text, a tool
call with a cache hit, thinking with a prompt above 200k tokens), their ``usageMetadata`` written
by hand (no real Google call is possible here), passed through the gateway; the cost the log
record holds equals the cost computed by hand from Google's published prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from tests.test_ai_proxy_315 import plugin, target
from tests.test_service import GatewayInMemory, ask

README = Path(__file__).resolve().parents[1] / "README.md"

# Gemini 2.5 Pro, Standard, USD per 1M tokens (Google's Gemini API pricing page; see the README).
INPUT, OUTPUT, CACHED = 1.25, 10.00, 0.125  # prompts <= 200k tokens
INPUT_LONG, OUTPUT_LONG, CACHED_LONG = 2.50, 15.00, 0.25  # prompts > 200k tokens

PRICES = """            input_cost: 1.25
            output_cost: 10
            cache_read_cost: 0.125
            context_window_factor:
            - {above: "200k", input_factor: 2, output_factor: 1.5}
"""

#: name -> (the parts Gemini answers, its usageMetadata, the cost by hand, as the README prints it)
ROWS = {
    "text": (
        [{"text": "The Alexiad has fifteen books."}],
        {"promptTokenCount": 1200, "candidatesTokenCount": 300, "totalTokenCount": 1500},
        (1200 * INPUT + 300 * OUTPUT) / 1e6,
        "$0.0045",
    ),
    "tools": (
        [{"functionCall": {"name": "Read", "args": {"file_path": "/srv/notes.txt"}}}],
        {"promptTokenCount": 38000, "cachedContentTokenCount": 30000, "candidatesTokenCount": 40,
         "totalTokenCount": 38040},
        ((38000 - 30000) * INPUT + 30000 * CACHED + 40 * OUTPUT) / 1e6,
        "$0.01415",
    ),
    "thinking": (
        [{"text": "Weighing the sources.", "thought": True}, {"text": "Book XV ends the reign."}],
        {"promptTokenCount": 250000, "candidatesTokenCount": 1200, "thoughtsTokenCount": 2800,
         "totalTokenCount": 254000},
        (250000 * INPUT_LONG + (1200 + 2800) * OUTPUT_LONG) / 1e6,
        "$0.685",
    ),
}


class CannedGemini(Resource):
    """Answers every generateContent with the row named in the request's last text."""

    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        body = json.loads(request.content.read())
        text = body["contents"][-1]["parts"][-1]["text"]
        parts, usage, _, _ = ROWS[text]
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-pro",
        }).encode()


class CostTable(GatewayInMemory):
    extra_files = plugin([target("gemini-2.5-pro", options=PRICES)])

    def upstream_resource(self) -> IResource:
        return CannedGemini()

    def logged_cost(self, row: str, **extra) -> float:
        status, _, text = self.post(ask(row, **extra))
        self.assertEqual(status, 200, text)
        return self.records()[-1]["ai"]["proxy"]["usage"]["cost"]

    def test_text(self):
        self.assertEqual(self.logged_cost("text"), pytest.approx(ROWS["text"][2]))

    def test_tools_with_a_cache_hit(self):
        tools = [{"name": "Read", "description": "read a file", "input_schema": {
            "type": "object", "properties": {"file_path": {"type": "string"}}}}]
        self.assertEqual(self.logged_cost("tools", tools=tools), pytest.approx(ROWS["tools"][2]))

    def test_thinking_above_200k_tokens(self):
        cost = self.logged_cost("thinking", max_tokens=8000, thinking={"type": "enabled", "budget_tokens": 4000})
        self.assertEqual(cost, pytest.approx(ROWS["thinking"][2]))


@pytest.mark.parametrize("row", ROWS)
def test_the_readme_prints_the_hand_computed_cost(row):
    _, usage, by_hand, printed = ROWS[row]
    assert float(printed[1:]) == pytest.approx(by_hand)
    line = next(line for line in README.read_text().splitlines() if line.startswith(f"| {row} |"))
    assert json.dumps(usage) in line and line.count(printed) == 2, line  # logged and by hand
