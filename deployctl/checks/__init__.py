"""Checks against running services, and the reports they write.

- `contract`: the HTTP contract's checks and their client; `smoke`: `smoke-test` (a started artifact
  or a deployed URL); `stream_smoke`: the kafka target's smoke test through a real broker.
- `gates`: a named limit on one figure of a report (compare, loadtest), always listed with its value.
- `report`: JSON and JUnit documents and the redaction of secrets; `html`: self-contained HTML
  pages with plots drawn by matplotlib (inline SVG: nothing is fetched when the page is opened).
"""
