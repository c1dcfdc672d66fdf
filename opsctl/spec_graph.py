"""The steps as a graph: the checks that need every step at once, and the order they run in.

A step's own fields are checked as it is read (opsctl/spec_check.py); whether its dependencies name
steps that exist, fit them and close no cycle can only be known once all are read. Apart because
these walk the whole graph rather than one step's fields, and without recursion: a spec decides how
long a chain of steps is.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from opsctl.spec_model import Step
from opsctl.spec_yaml import _At


def _check_dependencies(steps: list[Step], dep_lines: Mapping[tuple[str, str], int]) -> None:
    """Each dependency names another step, an N_TO_N one a step of the same array size, and
    no chain of them comes back to where it started; `dep_lines` gives each (step, dependency)
    its line in the spec."""
    by_name = {step.name: step for step in steps}
    for step in steps:
        for dep in step.depends_on:
            line = dep_lines.get((step.name, dep.step), step.line)
            where = f"step '{step.name}': depends_on: "
            if dep.step == step.name:
                raise _At(line, f"{where}'{dep.step}' is the step itself")
            other = by_name.get(dep.step)
            if other is None:
                raise _At(line, f"{where}unknown step '{dep.step}' (steps: {', '.join(by_name)})")
            if dep.n_to_n and (step.array_size != other.array_size or step.array_size < 2):
                raise _At(
                    line,
                    f"{where}N_TO_N needs two array steps of the same size, but "
                    f"'{step.name}' has array_size {step.array_size} and "
                    f"'{other.name}' has {other.array_size}",
                )
    cycle = _find_cycle(steps)
    if cycle:
        first = by_name[cycle[0]]
        raise _At(first.line, f"dependency cycle: {' -> '.join([*cycle, cycle[0]])}")


def _find_cycle(steps: list[Step]) -> list[str] | None:
    """A dependency cycle as a list of step names, or None. Depth-first in spec order, with an
    explicit stack: a chain of thousands of steps must not exhaust Python's recursion limit."""
    graph = {step.name: [d.step for d in step.depends_on] for step in steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for step in steps:
        if step.name in state:
            continue
        path = [step.name]
        state[step.name] = 1
        pending = [iter(graph[step.name])]  # the edges still to follow from each step on the path
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                pending.append(iter(graph[nxt]))
    return None


def _topological(steps: list[Step]) -> list[Step]:
    """Steps ordered so each follows its dependencies; ties keep spec order (Kahn's algorithm,
    the ready steps in a heap by position: linear but for the heap's log)."""
    waiting = [len(step.depends_on) for step in steps]
    dependents: dict[str, list[int]] = {step.name: [] for step in steps}
    for i, step in enumerate(steps):
        for dep in step.depends_on:
            dependents[dep.step].append(i)
    ready = [i for i, count in enumerate(waiting) if not count]
    heapq.heapify(ready)
    ordered: list[Step] = []
    while ready:
        step = steps[heapq.heappop(ready)]
        ordered.append(step)
        for i in dependents[step.name]:
            waiting[i] -= 1
            if not waiting[i]:
                heapq.heappush(ready, i)
    return ordered
