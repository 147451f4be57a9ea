"""The naive peer of the kafka benchmark: the generated consumer, but one model call per record.

Everything else is the generated consumer's (same poll, produce, acknowledgements and commit), so
the difference measured is the micro-batch alone. Run with the artifact's Python, from the
artifact: `cd build/stream && PYTHONPATH=. .venv/bin/python /path/to/bench/naive_consumer.py`.
"""

from __future__ import annotations

from typing import Any

from app.consumer import StreamScorer, dead_letter, main, origin
from app.runtime import BadRequest


class OneCallPerRecord(StreamScorer):
    def outputs(self, records: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
        results = []
        for record in records:
            try:
                answer = self.service.answer("/predict", self.service.parse(record.value() or b""))
                results.append((record, {**answer, "input": origin(record)}))
            except BadRequest as exc:
                results.append((record, dead_letter(record, exc)))
        return results


if __name__ == "__main__":
    main(OneCallPerRecord)
