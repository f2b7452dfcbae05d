"""deployments/infra/main.bicep, parsed with pycep (a Python Bicep parser) since no Bicep compiler
can be installed here: it parses, and its role assignments, rules and hardening are what the
deployment needs. This checks structure, not Azure's acceptance: `az bicep build` and `what-if`
remain the first steps against Azure (deployments/infra/README.md).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from pycep import BicepParser

from tasks.settings import REPO_ROOT

TEMPLATE = REPO_ROOT / "deployments" / "infra" / "main.bicep"
WORKER = "workerPrincipalId"


@cache
def template() -> dict[str, Any]:
    return BicepParser(cache=False).parse(file_path=TEMPLATE)


def _var(name: str) -> Any:
    return template()["variables"][name]["value"]


def _ref(node: Any) -> str:
    """``a.b.c`` / ``a[b]`` of a pycep accessor node, or the node itself when it is a name."""
    if isinstance(node, str):
        return node
    op = node["operator"]
    left, right = op["operands"]["operand_1"], op["operands"]["operand_2"]
    if op["type"] == "property_accessor":
        return f"{_ref(left)}.{_ref(right)}"
    if op["type"] == "index_accessor":
        return f"{_ref(left)}[{_ref(right)}]"
    raise AssertionError(f"not an accessor: {node}")


def _container(index_var: str) -> str:
    found = _var(index_var)["function"]["parameters"]
    assert found["string_to_search"] == "dataContainers"
    return found["string_to_find"]


def _role(ref: str) -> str:
    """A role reference as its built-in role's key in ``roles``, or a custom role's name."""
    if ref.startswith("roles."):
        return ref.removeprefix("roles.")
    assert ref.endswith(".name") and template()["resources"][ref[:-5]]["type"] == (
        "Microsoft.Authorization/roleDefinitions"), ref
    return ref[:-5]


def _principal(ref: str) -> str:
    return ref.split(".")[0]  # jobIdentity.properties.principalId -> jobIdentity


def _scope(ref: str, bindings: dict[str, Any]) -> str:
    if ref.startswith("containers["):
        index = ref[len("containers["):-1]
        index = bindings.get(index, index)
        return f"container:{_container(index)}"
    return ref


def role_assignments() -> set[tuple[str, str, str]]:
    """Every (principal, scope, role) the template grants, loops expanded."""
    grants: set[tuple[str, str, str]] = set()
    for resource in template()["resources"].values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource["config"]
        items: list[dict[str, Any]] = [{}]
        if "loop_type" in config:
            detail = config["loop_type"]["detail"]
            array = detail["array_name"]
            if isinstance(array, dict):  # `empty(worker) ? [] : grants`: the granting branch
                array = array["operator"]["operands"]["false_value"]
            item = detail["item_name"]
            items = [
                {item: _ref(entry)} if isinstance(entry, str) or "operator" in entry
                else {f"{item}.{key}": _ref(value) for key, value in entry.items()}
                for entry in _var(array)
            ]
        body = config["config"] if "condition" in config else config
        for bindings in items:
            props = body["properties"]
            role_ref = props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
            role = bindings.get(_ref(role_ref), _ref(role_ref))
            grants.add((_principal(_ref(props["principalId"])),
                        _scope(_ref(body["scope"]), bindings), _role(role)))
    return grants


def test_the_template_parses_and_keeps_its_resources() -> None:
    resources = template()["resources"]
    for name in ("dataAccount", "systemAccount", "workspace", "cluster", "keyVault", "registry",
                 "dataLifecycle", "dataTopic", "bridgeSubscription", "blobTagger"):
        assert name in resources


@pytest.mark.parametrize(
    ("principal", "scope", "role"),
    [
        # Blocker 2: the submitting identity uploads code snapshots to the key-less system account.
        (WORKER, "systemAccount", "blobDataContributor"),
        (WORKER, "systemAccount", "fileDataPrivilegedContributor"),
        # Blocker 3: the cluster's identity pulls the image and reaches the system account.
        ("jobIdentity", "registry", "acrPull"),
        ("jobIdentity", "systemAccount", "blobDataContributor"),
        ("jobIdentity", "container:jobs", "blobDataContributor"),
        ("workspace", "systemAccount", "blobDataContributor"),
        ("workspace", "systemAccount", "fileDataPrivilegedContributor"),
        # High 5: tagging a failed input needs tags/write, on both containers inputs come from.
        (WORKER, "container:videos", "blobTagger"),
        (WORKER, "container:styles", "blobTagger"),
        (WORKER, "container:videos", "blobDataContributor"),
        (WORKER, "container:styles", "blobDataReader"),
        (WORKER, "container:stylized", "blobDataContributor"),
        (WORKER, "container:jobs", "blobDataContributor"),
        (WORKER, "dataAccount", "blobDelegator"),
        (WORKER, "workspace", "azureMLDataScientist"),
        # The Prefect side's secrets come from the vault, read as the worker's identity.
        (WORKER, "keyVault", "keyVaultSecretsUser"),
        # Dead letters are written by the topic's identity (the data account takes no keys).
        ("dataTopic", "container:deadletter", "blobDataContributor"),
    ],
)
def test_role_assignment_exists(principal: str, scope: str, role: str) -> None:
    assert (principal, scope, role) in role_assignments()


def test_data_roles_on_the_data_account_are_per_container() -> None:
    on_account = {(p, r) for p, s, r in role_assignments() if s == "dataAccount"}
    assert on_account == {(WORKER, "blobDelegator")}


def test_built_in_role_ids_are_the_published_ones() -> None:
    assert _var("roles") == {
        "blobDataReader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        "blobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "blobDelegator": "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",
        "fileDataPrivilegedContributor": "69566ab7-960f-475b-8e7c-b3118f30c6bd",
        "acrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
        "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
        "azureMLDataScientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    }


def test_the_tagger_role_grants_tags_only() -> None:
    config = template()["resources"]["blobTagger"]["config"]
    (permission,) = config["properties"]["permissions"]
    assert permission["actions"] == [] and permission["dataActions"] == [
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write",
    ]


def test_lifecycle_rules_expire_job_folders_and_dead_letters() -> None:
    rules = template()["resources"]["dataLifecycle"]["config"]["properties"]["policy"]["rules"]
    by_prefix = {
        rule["definition"]["filters"]["prefixMatch"][0]:
            rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
        for rule in rules
    }
    assert by_prefix == {"${dataContainers[jobsIdx]}/": "jobsRetentionDays",
                         "${dataContainers[deadLetterIdx]}/": "deadLetterRetentionDays"}
    assert _container("jobsIdx") == "jobs" and _container("deadLetterIdx") == "deadletter"


def test_event_subscription_dead_letters_and_supports_entra_delivery() -> None:
    sub = template()["resources"]["bridgeSubscription"]["config"]["config"]["properties"]
    dead = sub["deadLetterWithResourceIdentity"]
    assert dead["identity"] == {"type": "SystemAssigned"}
    assert _ref(dead["deadLetterDestination"]["properties"]["resourceId"]) == "dataAccount.id"
    assert _ref(dead["deadLetterDestination"]["properties"]["blobContainerName"]) == (
        "dataContainers[deadLetterIdx]")
    assert template()["resources"]["dataTopic"]["config"]["identity"] == {
        "type": "SystemAssigned"}
    entra = _var("webhookEntra")["operator"]["operands"]["true_value"]
    assert entra == {"azureActiveDirectoryTenantId": "bridgeEntraTenantId",
                     "azureActiveDirectoryApplicationIdOrUri": "bridgeEntraAppIdOrUri"}
    union = sub["destination"]["properties"]["function"]
    assert union["type"] == "union" and set(union["parameters"].values()) == {
        "webhookBase", "webhookEntra"}
    # The bridge refuses the dead-letter container's events: the filter never sends them.
    (subject_filter,) = sub["filter"]["advancedFilters"]
    assert all("deadletter" not in value for value in subject_filter["values"])


def test_name_prefix_is_validated_and_every_name_uses_the_checked_value() -> None:
    decorators = {d["type"]: d.get("argument")
                  for d in template()["parameters"]["namePrefix"]["decorators"]}
    assert (decorators["min_length"], decorators["max_length"]) == (3, 11)
    operands = _var("prefix")["operator"]["operands"]
    assert operands["condition"] == "prefixIsValid" and operands["true_value"] == "namePrefix"
    trap = operands["false_value"]["function"]["parameters"]["value_to_convert"]["function"]
    assert trap["type"] == "int" and "namePrefix must be" in trap["parameters"]["value_to_convert"]
    text = TEMPLATE.read_text()
    assert "${namePrefix}" not in text and "'${prefix}-jobs'" in text


def test_key_vault_redeploys_and_secrets_stay_out_of_outputs() -> None:
    vault = template()["resources"]["keyVault"]["config"]["properties"]
    assert vault["enableRbacAuthorization"] is True
    purge = vault["enablePurgeProtection"]["operator"]["operands"]
    assert (purge["condition"], purge["true_value"], purge["false_value"]) == (
        "keyVaultPurgeProtection", True, None)
    assert template()["parameters"]["keyVaultPurgeProtection"]["default"] is False
    assert "nameSeed" in _var("suffix")["function"]["parameters"].values()
    for secret in ("prefectApiKey", "bridgeSharedSecret", "bridgeEndpoint"):
        assert {"type": "secure"} in template()["parameters"][secret]["decorators"]
    outputs = str(template()["outputs"])
    assert "prefectApiKey" not in outputs and "bridgeSharedSecret" not in outputs


def test_hardening_of_both_storage_accounts() -> None:
    resources = template()["resources"]
    for name in ("dataAccount", "systemAccount"):
        props = resources[name]["config"]["properties"]
        assert props["minimumTlsVersion"] == "TLS1_2"
        assert props["allowBlobPublicAccess"] is False
    assert resources["dataAccount"]["config"]["properties"]["allowSharedKeyAccess"] is False
    assert resources["registry"]["config"]["properties"]["adminUserEnabled"] is False
