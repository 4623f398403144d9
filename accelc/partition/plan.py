"""The partition plan as data: stages (nodes, device, backend, cost, threads) and the cuts between.

A plan is a chain: stage ``i`` takes exactly the values live at cut ``i - 1`` (stage 0 takes the
graph inputs) and returns the values live at cut ``i`` (the last stage returns the graph
outputs). A value produced early and used late passes through the stages in between, so every
executor, ``torch.distributed.pipelining`` included, sees one tensor list per hop.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PLAN_VERSION = 1

# The fx node kinds that compute something (what a stage is made of).
CALL_OPS = ("call_function", "call_method", "call_module")


@dataclass
class Stage:
    index: int
    nodes: list[str]
    device: str = "cpu"
    backend: str = "torch"
    cost_s: float = 0.0  # estimated (or measured, when ``Plan.profiled``) seconds for one run
    flops: float = 0.0
    threads: int = 1
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class Cut:
    after_stage: int
    tensors: list[str]
    bytes: int


@dataclass
class Plan:
    stages: list[Stage]
    cuts: list[Cut]
    graph_inputs: list[str]
    graph_outputs: list[str | None]  # flat output leaves: a node name, or None for a constant
    profiled: bool = False
    node_ms: dict[str, float] = field(default_factory=dict)  # the per-node profile, when taken
    version: int = PLAN_VERSION

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def devices(self) -> list[str]:
        return [s.device for s in self.stages]

    def stage_of(self) -> dict[str, int]:
        """Node name -> stage index."""
        return {name: s.index for s in self.stages for name in s.nodes}

    def balance(self) -> float:
        """Slowest stage cost over the mean stage cost (1.0 is perfect balance)."""
        costs = [s.cost_s for s in self.stages]
        mean = sum(costs) / len(costs)
        return max(costs) / mean if mean > 0 else 1.0

    def summary(self) -> str:
        lines = [f"{self.num_stages} stage(s), balance {self.balance():.2f}"]
        for s in self.stages:
            lines.append(f"  stage {s.index} on {s.device} ({s.backend}, {s.threads} thread(s)): "
                         f"{len(s.nodes)} nodes, {s.cost_s * 1e3:.3f} ms, {s.flops / 1e6:.1f} MFLOP")
        for c in self.cuts:
            lines.append(f"  cut after stage {c.after_stage}: {len(c.tensors)} tensor(s), {c.bytes} bytes")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        from ..errors import ArtifactError

        data = json.loads(text)
        if data.get("version") != PLAN_VERSION:
            raise ArtifactError(f"plan.json has version {data.get('version')}, expected {PLAN_VERSION}; re-run accelc optimize")
        data["stages"] = [Stage(**s) for s in data["stages"]]
        data["cuts"] = [Cut(**c) for c in data["cuts"]]
        return cls(**data)

    def save(self, path) -> None:
        with open(path, "w") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path) -> Plan:
        with open(path) as f:
            return cls.from_json(f.read())
