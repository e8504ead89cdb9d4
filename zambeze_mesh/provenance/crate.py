"""A campaign as a Provenance Run Crate, written with :mod:`rocrate`.

Mapping (profiles: Process Run Crate 0.5, Workflow Run Crate 0.5, Provenance Run
Crate 0.5):

* the campaign definition (the activity specs as submitted, functions replaced by
  their sha256) is the main workflow ``campaign.json``
  (``File``/``SoftwareSourceCode``/``ComputationalWorkflow``/``HowTo``); each
  activity is a tool (``#tool-<activity>``) and a ``HowToStep``;
* the campaign run is a ``CreateAction`` (``#run``) and its orchestration by the
  monitor an ``OrganizeAction`` (``#orchestration``) whose instrument is
  zambeze-mesh;
* each attempt of an activity is a ``CreateAction`` (``#attempt-<activity>-<n>``)
  with start and end times, status, error, exit code, the agent that ran it
  (``spiffe://<mesh>/agent/<name>``, with its labels and plugins), the plugin,
  attempt number and retries, and a ``ControlAction`` linking it to its step;
* parameters are ``PropertyValue`` objects of the attempts (the secret rule of
  :mod:`.params` applies); resource usage (duration, bytes moved, transfer method
  and rate) is ``resourceUsage``;
* data are ``File``/``Dataset`` entities whose ``@id`` is their ``NAME://path``
  URI (see :func:`_entity_id` for names that are no URI scheme; the URI is also
  their ``identifier``), with ``contentSize`` and ``sha256``: the inputs are objects of the attempts
  that read them and the outputs results of the attempts that produced them (an
  ``@output:`` input is the very entity its producer made). An output the monitor
  found missing or changed on its agent says so in ``creativeWorkStatus``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from google.protobuf import json_format

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.provenance.history import Attempt, DataRef, History, history_of
from zambeze_mesh.provenance.params import public_params
from zambeze_mesh.v1 import campaigns_pb2, common_pb2
from zambeze_mesh.version import __version__

PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.5": "Workflow Run Crate",
    "https://w3id.org/ro/wfrun/provenance/0.5": "Provenance Run Crate",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": "Workflow RO-Crate",
}
TERMS = "https://w3id.org/ro/terms/zambeze-mesh#"
"""Namespace of the few terms schema.org lacks (``attempt``, ``retries``, ``plugin``...)."""
WFRUN = "https://w3id.org/ro/terms/workflow-run#"
EXTRA_TERMS = {
    **{t: TERMS + t for t in ("attempt", "retries", "plugin", "labels")},
    **{t: WFRUN + t for t in ("exitCode", "resourceUsage")},
    "sha256": "http://schema.org/sha256",  # as RO-Crate 1.2+ contexts map it
}
RO_CRATE_VERSION = "1.1"
"""The profiles above build on RO-Crate 1.1 (its context maps ``ComputationalWorkflow``
to ``https://bioschemas.org/ComputationalWorkflow``, as they expect)."""
DEFAULT_LICENSE = "https://spdx.org/licenses/CC-BY-4.0"
QUDT = "http://qudt.org/vocab/unit/"
ACTIVE = "http://schema.org/ActiveActionStatus"
#: Action status by final state (strings, as the Process Run Crate profile checks them).
STATUS = {
    "SUCCEEDED": "http://schema.org/CompletedActionStatus",
    "FAILED": "http://schema.org/FailedActionStatus",
    "CANCELLED": "http://schema.org/FailedActionStatus",
    "SKIPPED": "http://schema.org/FailedActionStatus",
}


@dataclass(frozen=True)
class AgentInfo:
    """What the crate says about a mesh agent (from ``ListMembers``, when known)."""

    name: str
    plugins: tuple[str, ...] = ()
    labels: Mapping[str, str] | None = None


def _iso(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _frag(*parts: object) -> str:
    return "#" + "-".join(quote(str(p), safe="") for p in parts)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+")


def _entity_id(uri: str) -> str:
    """The ``@id`` of data at ``NAME://path``: that URI when NAME is a URI scheme of
    two characters or more; otherwise (``A://x`` reads as a Windows drive, ``my_host``
    is no scheme) ``urn:zmesh:data:<quoted URI>``. ``identifier`` is always the URI."""
    scheme = uri.partition("://")[0]
    if _SCHEME.fullmatch(scheme):
        return uri
    return "urn:zmesh:data:" + quote(uri, safe="/:")


def _clean(props: dict[str, Any]) -> dict[str, Any]:
    """``props`` without the unknown (None) values (rocrate would write them as null)."""
    return {k: v for k, v in props.items() if v is not None}


def _ref(entity_id: str) -> dict[str, str]:
    return {"@id": entity_id}


class _Builder:
    """Accumulates entities into one rocrate ``ROCrate``."""

    def __init__(
        self,
        history: History,
        agents: Mapping[str, AgentInfo],
        license: str,
        included: Mapping[str, Path] | None = None,
    ) -> None:
        from rocrate.rocrate import ROCrate

        self.h = history
        self.rec = history.record
        self.agents = agents
        self.crate = ROCrate(version=RO_CRATE_VERSION)
        self.crate.metadata.extra_terms.update(EXTRA_TERMS)
        self.license = license
        self.data: dict[str, Any] = {}
        self.params: dict[str, list[str]] = {}
        self.produced: dict[str, None] = {}
        self.key_of: dict[str, str] = {}
        self.actions: list[Any] = []
        self.entities: dict[str, Any] = {}
        self.included = dict(included or {})
        self.specs = {s.name: s for s in self.rec.activities}

    # -- generic helpers ---------------------------------------------------------
    def context(self, entity_id: str, props: dict[str, Any]) -> Any:
        from rocrate.model.contextentity import ContextEntity

        existing = self.entities.get(entity_id)  # crate.get is O(entities): not in loops
        if existing is not None:
            return existing
        clean = {k: v for k, v in props.items() if v is not None}
        entity = self.crate.add(ContextEntity(self.crate, entity_id, properties=clean))
        self.entities[entity_id] = entity
        return entity

    # -- data entities -----------------------------------------------------------
    def datum(self, ref: DataRef) -> Any:
        """The File/Dataset entity of ``ref`` (one per URI; digests merged in).

        A file whose copy is in ``included`` goes into the crate (``data/NAME/path``)
        and keeps its URI as ``identifier``."""
        is_dir = ref.is_dir or ref.uri.endswith("/")
        key = ref.uri.rstrip("/") + "/" if is_dir else ref.uri
        ent = self.data.get(key)
        if ent is None:
            props: dict[str, Any] = {"name": key.rstrip("/").rsplit("/", 1)[-1] or key}
            props["identifier"] = ref.uri.rstrip("/")
            local = None if is_dir else self.included.get(ref.uri)
            if is_dir:
                ent = self.crate.add_dataset(_entity_id(key), properties=props)
            elif local is not None:
                holder, _, path = ref.uri.partition("://")
                dest = f"data/{quote(holder, safe='')}/{path.lstrip('/')}"
                ent = self.crate.add_file(str(local), dest, properties=props)
            else:
                ent = self.crate.add_file(_entity_id(key), properties=props)
            self.data[key] = ent
            self.key_of[ent.id] = key
        if ref.size is not None and "contentSize" not in ent:
            ent["contentSize"] = str(ref.size)
        if ref.sha256 and "sha256" not in ent:
            ent["sha256"] = ref.sha256
        return ent

    # -- the workflow and its tools ------------------------------------------------
    def workflow(self) -> Any:
        specs = [
            json_format.MessageToDict(s, preserving_proto_field_name=True)
            for s in self.rec.activities
        ]
        for d in specs:  # the secret rule: no secret env values in the definition
            for body in ("shell", "python"):
                if "env" in d.get(body, {}):
                    d[body]["env"] = public_params(d[body]["env"])
        doc = {
            "campaign": self.rec.status.name,
            "campaign_id": self.rec.status.campaign_id,
            "monitor": self.rec.status.monitor,
            "function_sha256": dict(self.rec.function_sha256),
            "activities": specs,
        }
        fd, tmp = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
        self._tmp = tmp
        from rocrate.model.computationalworkflow import ComputationalWorkflow
        from rocrate.model.computerlanguage import ComputerLanguage

        lang = self.crate.add(
            ComputerLanguage(
                self.crate,
                "#zambeze-mesh-campaign",
                properties={
                    "name": "zambeze-mesh campaign (ActivitySpec JSON)",
                    "url": _ref("https://protobuf.dev/programming-guides/json/"),
                    "version": "v1",
                },
            )
        )

        class CampaignWorkflow(ComputationalWorkflow):  # type: ignore[misc,unused-ignore]
            TYPES = ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"]

        wf = self.crate.add_workflow(
            tmp, "campaign.json", main=True, lang=lang, cls=CampaignWorkflow
        )
        wf["name"] = self.rec.status.name
        wf["encodingFormat"] = "application/json"
        return wf

    def tool(self, spec: common_pb2.ActivitySpec, position: int) -> tuple[Any, Any]:
        body = spec.WhichOneof("body") or ""
        props: dict[str, Any] = {"@type": "SoftwareApplication", "name": spec.name}
        if body == "shell":
            props.update(
                {"@type": "SoftwareSourceCode", "text": spec.shell.cmd or None},
            )
            props["description"] = f"shell command of activity {spec.name}"
            props["programmingLanguage"] = "sh"
        elif body == "python" and self.rec.function_sha256.get(spec.name):
            py = spec.python
            props.update(
                {
                    "@type": "SoftwareSourceCode",
                    "description": f"shipped Python function {py.function_name or '?'}",
                    "alternateName": py.function_name or None,
                    "text": py.function_source or None,
                    "programmingLanguage": "Python",
                    "sha256": self.rec.function_sha256[spec.name],
                    "encodingFormat": "application/x-cloudpickle",
                }
            )
        elif body == "python":
            props["description"] = f"Python script {spec.python.script_uri}"
        elif body == "workflow":
            props["description"] = f"{spec.workflow.wf_manager} workflow {spec.workflow.wf_uri}"
        elif body == "transfer":
            props["description"] = f"transfer {spec.transfer.source} -> {spec.transfer.dest}"
        props["plugin"] = spec.plugin or (spec.workflow.wf_manager if body == "workflow" else body)
        tool = self.context(_frag("tool", spec.name), props)
        script = self._script_ref(spec.name)
        if script is not None:
            tool["isBasedOn"] = self.datum(script)
        step = self.context(
            _frag("step", spec.name),
            {
                "@type": "HowToStep",
                "name": spec.name,
                "position": str(position),
                "workExample": tool,
            },
        )
        return tool, step

    def _script_ref(self, activity: str) -> DataRef | None:
        """The script with its digest, as the first attempt that staged it saw it."""
        for att in self.h.by_activity(activity):
            for ref in att.inputs:
                if ref.role == "script":
                    return ref
        return None

    # -- parameters ----------------------------------------------------------------
    def parameters(self, spec: common_pb2.ActivitySpec) -> list[Any]:
        if spec.name in self.params:
            return [self.entities[i] for i in self.params[spec.name]]
        values: dict[str, str] = {}
        body = spec.WhichOneof("body")
        if body == "shell":
            values.update({f"env.{k}": v for k, v in public_params(spec.shell.env).items()})
        elif body == "python":
            values.update({f"env.{k}": v for k, v in public_params(spec.python.env).items()})
            values.update({f"args[{i}]": a for i, a in enumerate(spec.python.args)})
            values.update(public_params(spec.python.function_params))
        elif body == "workflow":
            values.update({f"args[{i}]": a for i, a in enumerate(spec.workflow.args)})
            if spec.workflow.wf_config_json:
                values["wf_config"] = spec.workflow.wf_config_json
        if spec.timeout_s:
            values["timeout_s"] = str(spec.timeout_s)
        out = []
        for key, value in values.items():
            pv = self.context(
                _frag("param", spec.name, key),
                {"@type": "PropertyValue", "name": key, "value": value},
            )
            out.append(pv)
        self.params[spec.name] = [p.id for p in out]
        return out

    # -- agents --------------------------------------------------------------------
    def agent(self, name: str) -> Any:
        info = self.agents.get(name, AgentInfo(name))
        mesh = self.rec.mesh or "mesh"
        props: dict[str, Any] = {
            "@type": "SoftwareApplication",
            "name": f"zambeze-mesh agent {name}",
            "identifier": f"spiffe://{mesh}/agent/{name}",
            "softwareVersion": None,
        }
        if info.plugins:
            props["featureList"] = list(info.plugins)
        if info.labels:
            props["labels"] = [f"{k}={v}" for k, v in sorted(info.labels.items())]
        return self.context(f"spiffe://{mesh}/agent/{name}", props)

    # -- attempts ------------------------------------------------------------------
    def attempt(self, att: Attempt, tool: Any, step: Any, checks: dict[str, Any]) -> Any:
        spec = self.specs.get(att.activity)
        usage: list[Any] = []

        def use(key: str, value: object, unit: str | None = None, code: str = "") -> None:
            usage.append(
                self.context(
                    _frag("usage", att.activity, att.number, key),
                    {
                        "@type": "PropertyValue",
                        "propertyID": TERMS + key,
                        "name": key,
                        "value": str(value),
                        "unitText": unit,
                        "unitCode": _ref(QUDT + code) if code else None,
                    },
                )
            )

        if att.detail.get("duration_s"):
            use("duration", att.detail["duration_s"], "s", "SEC")
        for i, tr in enumerate(att.transfers):
            use(f"transfer{i}-bytes", tr.bytes, "byte", "BYTE")
            use(f"transfer{i}-method", tr.method)
            use(f"transfer{i}-rate", tr.rate_mib_s, "MiB/s")
            use(f"transfer{i}-source", tr.uri)
        objects = [self.datum(r) for r in att.inputs if r.role != "script"]
        if spec is not None:
            objects.extend(self.parameters(spec))
        results = [self._output(o, checks) for o in att.outputs]
        if att.output_root and att.outputs:
            root = self.datum(DataRef(att.output_root, is_dir=True, role="output"))
            parts = {p.id for p in root.get("hasPart", []) or []} if "hasPart" in root else set()
            for r in results:
                if r.id != root.id and r.id not in parts:
                    root.append_to("hasPart", r)
            results.insert(0, root)
        self.produced.update(dict.fromkeys(self.key_of[r.id] for r in results))
        retries = spec.retries if spec is not None else 0
        action = self.crate.add_action(
            tool,
            identifier=_frag("attempt", att.activity, att.number),
            object=objects or None,
            result=results or None,
            properties=_clean(
                {
                    "name": f"{att.activity} (attempt {att.number})",
                    "startTime": _iso(att.start_ms),
                    "endTime": _iso(att.end_ms),
                    "actionStatus": STATUS.get(att.state, ACTIVE),
                    "error": att.message if att.state != "SUCCEEDED" and att.message else None,
                    "description": att.message if att.state == "SUCCEEDED" else None,
                    "exitCode": att.exit_code,
                    "attempt": att.number,
                    "retries": retries,
                    "plugin": att.plugin or None,
                    "agent": self.agent(att.agent) if att.agent else None,
                    "resourceUsage": usage or None,
                }
            ),
        )
        self.actions.append(action)
        self.context(
            _frag("control", att.activity, att.number),
            {
                "@type": "ControlAction",
                "name": f"orchestrate {att.activity} (attempt {att.number})",
                "instrument": step,
                "object": action,
                "actionStatus": action["actionStatus"],
            },
        )
        return action

    def _output(self, ref: DataRef, checks: dict[str, Any]) -> Any:
        ent = self.datum(ref)
        check = checks.get(ref.uri)
        if check is None:
            return ent
        if check.error:
            ent["creativeWorkStatus"] = f"Unchecked: {check.error}"
        elif not check.exists:
            ent["creativeWorkStatus"] = "Missing: no longer on its agent when the crate was made"
        elif check.sha256 and ref.sha256 and check.sha256 != ref.sha256:
            ent["creativeWorkStatus"] = (
                f"Modified: the file on its agent now has sha256 {check.sha256}"
            )
        else:
            ent["creativeWorkStatus"] = "Available"
        return ent

    # -- the whole crate -----------------------------------------------------------
    def build(self) -> Any:
        st = self.rec.status
        crate = self.crate
        crate.name = f"Provenance of campaign {st.name} ({st.campaign_id})"
        crate.description = (
            f"Workflow Run RO-Crate of zambeze-mesh campaign {st.name!r} (id {st.campaign_id},"
            f" monitored by {st.monitor}): {self.h.state}. {st.message}".strip()
        )
        crate.root_dataset["license"] = self.context(
            self.license, {"@type": "CreativeWork", "name": self.license.rsplit("/", 1)[-1]}
        )
        wf = self.workflow()
        crate.root_dataset["conformsTo"] = [
            self.context(uri, {"@type": "CreativeWork", "name": name, "version": uri[-3:]})
            for uri, name in PROFILES.items()
        ]
        checks = {f"{c.agent}://{c.path}": c for c in self.rec.outputs}
        tools, steps = [], []
        step_of = {}
        for i, spec in enumerate(self.rec.activities):
            tool, step = self.tool(spec, i)
            tools.append(tool)
            steps.append(step)
            step_of[spec.name] = (tool, step)
        wf["hasPart"] = tools
        wf["step"] = steps
        controls = []
        for att in self.h.attempts:
            if not att.agent or att.activity not in step_of:
                continue  # never placed (skipped or cancelled before an award)
            tool, step = step_of[att.activity]
            self.attempt(att, tool, step, checks)
            controls.append(self.entities[_frag("control", att.activity, att.number)])
        consumed_external = [
            ent
            for eid, ent in self.data.items()
            if eid not in self.produced and self._is_input(eid)
        ]
        finals = [self.data[eid] for eid in self.produced]
        engine = self.context(
            "#zambeze-mesh",
            {
                "@type": "SoftwareApplication",
                "name": "zambeze-mesh",
                "softwareVersion": __version__,
                "url": _ref("https://pypi.org/project/zambeze-mesh/"),
            },
        )
        run = crate.add_action(
            wf,
            identifier="#run",
            object=consumed_external or None,
            result=finals or None,
            properties=_clean(
                {
                    "name": f"Run of campaign {st.name}",
                    "startTime": _iso(self.h.start_ms),
                    "endTime": _iso(self.h.end_ms),
                    "actionStatus": STATUS.get(self.h.state, ACTIVE),
                    "description": f"campaign {st.campaign_id} of zambeze-mesh, monitored by "
                    f"{st.monitor}: {len(self.h.attempts)} attempts",
                    "error": st.message if self.h.state in ("FAILED", "CANCELLED") else None,
                    "identifier": st.campaign_id,
                }
            ),
        )
        crate.root_dataset["mentions"] = [run, *self.actions]
        self.context(
            "#orchestration",
            {
                "@type": "OrganizeAction",
                "name": f"Orchestration of campaign {st.name} by zambeze-mesh",
                "instrument": engine,
                "agent": self.agent(st.monitor) if st.monitor else None,
                "object": controls or None,
                "result": run,
                "startTime": _iso(self.h.start_ms),
                "endTime": _iso(self.h.end_ms),
            },
        )
        return crate

    def _is_input(self, eid: str) -> bool:
        for att in self.h.attempts:
            for ref in att.inputs:
                if ref.role != "script" and (ref.uri == eid or ref.uri.rstrip("/") + "/" == eid):
                    return True
        return False

    def close(self) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def build_crate(
    record: campaigns_pb2.ProvenanceRecord,
    agents: Mapping[str, AgentInfo] | None = None,
    *,
    license: str = DEFAULT_LICENSE,
    out: str | os.PathLike[str],
    included: Mapping[str, Path] | None = None,
) -> Path:
    """Write the crate of ``record`` to ``out`` (a directory, or a file ending ``.zip``).

    ``included`` maps output URIs (``NAME://path``) to local copies to put in the
    crate (``--with-data``); other data are described by their URI only.
    """
    if not record.status.campaign_id:
        raise InvalidInput("the provenance record has no campaign")
    target = Path(out)
    is_zip = target.suffix.lower() == ".zip"
    if is_zip and target.is_dir():
        raise InvalidInput(f"{target} is a directory, not a .zip file")
    if not is_zip and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInput(f"{target} exists and is not an empty directory")
    builder = _Builder(history_of(record), agents or {}, license, included)
    try:
        crate = builder.build()
        if is_zip:
            target.parent.mkdir(parents=True, exist_ok=True)
            crate.write_zip(str(target))
            with zipfile.ZipFile(target) as z:  # rocrate appends ".zip" only when missing
                z.testzip()
        else:
            crate.write(str(target))
    finally:
        builder.close()
    return target
