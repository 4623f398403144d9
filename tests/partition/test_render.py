"""The plan and timeline pictures are self-contained SVG fragments."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import torch
from accelc_test_samples import captured

from accelc.partition import make_plan
from accelc.partition.render import render_plan_html, render_timeline_html
from accelc.runtime.pipeline import build_executor


def test_plan_and_timeline_render():
    _, inputs, gm = captured("cnn")
    plan = make_plan(gm, inputs, stages=3)
    html = render_plan_html(plan)
    ET.fromstring(html)  # well-formed
    assert html.count("<title>") >= sum(len(s.nodes) for s in plan.stages) and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    executor = build_executor(gm, plan, microbatches=4)
    executor(torch.cat([inputs[0]] * 4))
    tl = render_timeline_html(executor.timeline)
    ET.fromstring(tl)
    assert tl.count("micro-batch ") >= 12
