"""Checks on rendered chart manifests that schemas cannot express.

Usage: check-chart-render.py README.md RELEASE_NAMESPACE RENDER.yaml...

- RBAC: the rules bound to each ServiceAccount are exactly the table between the
  `rbac-rules` markers in README.md (no more, no fewer), the API's are never cluster-wide,
  and each Deployment runs under its own ServiceAccount;
- every namespaced object carries metadata.namespace (so `helm template | kubectl apply`
  lands where the release is);
- no container takes a Secret as an environment variable (keys are mounted files).
Runs with the kubernetes-validate venv's Python (PyYAML).
"""
import re
import sys

import yaml

CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}


def readme_rules(path):
    text = open(path, encoding="utf-8").read()
    m = re.search(r"<!-- rbac-rules.*?-->(.*?)<!-- /rbac-rules -->", text, re.S)
    if not m:
        sys.exit(f"{path}: no <!-- rbac-rules --> table")
    want = {}
    for line in m.group(1).splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("ServiceAccount", "") or set(cells[0]) <= {"-"}:
            continue
        sa, _where, group, resources, verbs = cells
        group = "" if group == "core" else group
        for r in resources.split(","):
            for v in verbs.split(","):
                want.setdefault(sa, set()).add((group, r.strip().strip("`"), v.strip()))
    return want


def load(paths):
    docs = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def main():
    readme, release_ns, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    want = readme_rules(readme)
    failures = []
    for path in paths:
        docs = load([path])
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
            meta = d.get("metadata", {})
            if d["kind"] not in CLUSTER_KINDS and not meta.get("namespace"):
                failures.append(f"{path}: {d['kind']} {meta.get('name')} has no metadata.namespace")

        # ServiceAccount of each component, from its Deployment.
        component_of = {}
        for dep in by_kind.get("Deployment", []):
            component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
            pod = dep["spec"]["template"]["spec"]
            sa = pod.get("serviceAccountName")
            if not sa or sa in component_of:
                failures.append(f"{path}: Deployment {dep['metadata']['name']} needs a ServiceAccount of its own")
            component_of[sa] = component
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                if c.get("envFrom"):
                    failures.append(f"{path}: container {c['name']} uses envFrom (keys must be mounted files)")
                for e in c.get("env", []):
                    if "secretKeyRef" in (e.get("valueFrom") or {}):
                        failures.append(f"{path}: container {c['name']} takes Secret key {e['name']} as an env var")

        roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r for r in
                 by_kind.get("Role", []) + by_kind.get("ClusterRole", [])}
        got = {}
        for b in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", []):
            ref = b["roleRef"]
            ns = None if ref["kind"] == "ClusterRole" else b["metadata"]["namespace"]
            role = roles.get((ref["kind"], ns, ref["name"]))
            if role is None:
                failures.append(f"{path}: {b['kind']} {b['metadata']['name']} refers to a missing {ref['kind']}")
                continue
            for s in b["subjects"]:
                component = component_of.get(s["name"])
                if component is None or s.get("namespace") != release_ns:
                    failures.append(f"{path}: {b['kind']} {b['metadata']['name']} binds {s} (no Deployment runs as it)")
                    continue
                if component == "api" and b["kind"] == "ClusterRoleBinding":
                    failures.append(f"{path}: the API's rules must be namespaced (Role), not cluster-wide")
                for rule in role["rules"]:
                    for g in rule["apiGroups"]:
                        for r in rule["resources"]:
                            if r == "leases" and (b["kind"] != "RoleBinding" or ns != release_ns):
                                failures.append(f"{path}: Leases must be granted in the release namespace only")
                            for v in rule["verbs"]:
                                got.setdefault(component, set()).add((g, r, v))
        for component in sorted(set(got) | set(component_of.values())):
            extra = got.get(component, set()) - want.get(component, set())
            missing = want.get(component, set()) - got.get(component, set())
            for t in sorted(extra):
                failures.append(f"{path}: {component} is granted {t}, which the README's RBAC table does not list")
            for t in sorted(missing):
                failures.append(f"{path}: {component} lacks {t}, which the README's RBAC table lists")
        print(f"   {path.rsplit('/', 1)[-1]}: " + ", ".join(
            f"{c} {len(got.get(c, ()))} (group, resource, verb) grants" for c in sorted(got)))
    if failures:
        print("\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
