"""Storage credentials: no key as a default, one source checked when settings are built, blocks.

The block tests save and load real prefect-azure blocks on a throw-away Prefect server; the
managed-identity test serves a token endpoint on 127.0.0.1 the way App Service and Container
Apps publish theirs (``IDENTITY_ENDPOINT``), so azure-identity's real credential chain runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from prefect_azure import AzureBlobStorageCredentials
from pydantic import ValidationError

from tasks.settings import REPO_ROOT, RestyleSettings, StorageSettings
from tasks.storage import make_blob_store
from tasks.storage_credentials import StorageNotConfiguredError
from tests.prefect_server import PrefectServer, running_prefect_server

AZURITE_KEY_START = "Eby8vdM02xNOcqFl"  # the start of Azurite's published development key
AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)
ACCOUNT_URL = "https://restyledata.blob.core.windows.net"
CLIENT_ID = "0f5e2d4c-1b3a-4c5d-9e8f-7a6b5c4d3e2f"


@pytest.fixture(autouse=True)
def no_storage_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test names its own storage; the local stack's exported variables stay out."""
    for name in ("CREDENTIALS_BLOCK", "CONNECTION_STRING", "ACCOUNT_URL", "IDENTITY_CLIENT_ID"):
        monkeypatch.delenv(f"RESTYLE_STORAGE__{name}", raising=False)


def test_no_credential_is_a_code_default() -> None:
    storage = StorageSettings()
    assert (storage.credentials_block, storage.connection_string, storage.account_url) == (
        None, None, None)
    code = [p for folder in ("tasks", "flows", "deployments", "gpu")
            for p in (REPO_ROOT / folder).rglob("*.py")]
    assert code and not [p for p in code if AZURITE_KEY_START in p.read_text()]
    # The local stack's key lives in the stack's environment, which `make test` evaluates.
    assert AZURITE_KEY_START in (REPO_ROOT / "tools" / "stack.sh").read_text()


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_variable_is_unset_and_the_error_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RESTYLE_STORAGE__CONNECTION_STRING", value)
    monkeypatch.setenv("RESTYLE_STORAGE__ACCOUNT_URL", value)
    storage = RestyleSettings().storage
    assert storage.connection_string is None and storage.account_url is None
    with pytest.raises(StorageNotConfiguredError) as caught:
        make_blob_store(storage)
    for variable in ("RESTYLE_STORAGE__CREDENTIALS_BLOCK", "RESTYLE_STORAGE__ACCOUNT_URL",
                     "RESTYLE_STORAGE__CONNECTION_STRING"):
        assert variable in str(caught.value)


@pytest.mark.parametrize(
    "sources",
    [
        {"CONNECTION_STRING": AZURITE, "ACCOUNT_URL": ACCOUNT_URL},
        {"CREDENTIALS_BLOCK": "restyle-storage", "ACCOUNT_URL": ACCOUNT_URL},
        {"CREDENTIALS_BLOCK": "restyle-storage", "CONNECTION_STRING": AZURITE},
    ],
)
def test_two_sources_are_refused_when_settings_are_built(
    monkeypatch: pytest.MonkeyPatch, sources: dict[str, str]
) -> None:
    for name, value in sources.items():
        monkeypatch.setenv(f"RESTYLE_STORAGE__{name}", value)
    with pytest.raises(ValidationError, match="named more than once") as caught:
        RestyleSettings()
    for name in sources:
        assert f"RESTYLE_STORAGE__{name}" in str(caught.value)
    assert AZURITE_KEY_START not in str(caught.value)


def test_account_url_must_be_https_and_identity_needs_one() -> None:
    with pytest.raises(ValidationError, match="https://"):
        StorageSettings(account_url="http://127.0.0.1:10000/devstoreaccount1")
    with pytest.raises(ValidationError, match="identity_client_id applies to an account URL"):
        StorageSettings(connection_string=AZURITE, identity_client_id=CLIENT_ID)


def test_connection_string_builds_a_key_client_with_the_pinned_api_version() -> None:
    store = make_blob_store(StorageSettings(connection_string=AZURITE, api_version="2025-01-05"))
    assert store.account_name == "devstoreaccount1"
    assert store.client.url.startswith("http://127.0.0.1:10000/devstoreaccount1")
    assert store.client.api_version == "2025-01-05"


def test_malformed_connection_string_is_a_clear_error() -> None:
    with pytest.raises(StorageNotConfiguredError, match="malformed"):
        make_blob_store(StorageSettings(connection_string="not a connection string"))


class _IdentityEndpoint(BaseHTTPRequestHandler):
    """App Service / Container Apps style managed-identity token endpoint."""

    requests: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).requests.append(parse_qs(urlsplit(self.path).query))
        body = json.dumps({"access_token": "token-from-the-identity", "token_type": "Bearer",
                           "expires_on": str(int(time.time()) + 3600),
                           "resource": "https://storage.azure.com"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def identity_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, list[str]]]]:
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    server = HTTPServer(("127.0.0.1", 0), _IdentityEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_port}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "identity-header")
    _IdentityEndpoint.requests = []
    try:
        yield _IdentityEndpoint.requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("client_id", [CLIENT_ID, None])
def test_account_url_signs_in_as_the_named_managed_identity(
    identity_endpoint: list[dict[str, list[str]]], client_id: str | None
) -> None:
    store = make_blob_store(StorageSettings(account_url=ACCOUNT_URL, identity_client_id=client_id))
    assert store.account_name == "restyledata"
    credential = store.client.credential
    assert isinstance(credential, DefaultAzureCredential)
    token = credential.get_token("https://storage.azure.com/.default")
    assert token.token == "token-from-the-identity"
    asked_for = identity_endpoint[-1].get("client_id")
    assert asked_for == ([client_id] if client_id else None)


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    with running_prefect_server(tmp_path_factory.mktemp("prefect")) as server:
        yield server


@pytest.fixture
def prefect_settings(prefect: PrefectServer) -> Iterator[None]:
    with temporary_settings(updates={PREFECT_API_URL: prefect.api_url,
                                     PREFECT_API_AUTH_STRING: prefect.auth_string}):
        yield


@pytest.mark.slow  # starts a real Prefect server
@pytest.mark.usefixtures("prefect_settings")
def test_flows_load_the_named_block(identity_endpoint: list[dict[str, list[str]]]) -> None:
    AzureBlobStorageCredentials(account_url=ACCOUNT_URL).save("restyle-url", overwrite=True)
    AzureBlobStorageCredentials(connection_string=AZURITE).save("restyle-azurite", overwrite=True)
    by_url = make_blob_store(
        StorageSettings(credentials_block="restyle-url", identity_client_id=CLIENT_ID))
    assert by_url.account_name == "restyledata"
    by_url.client.credential.get_token("https://storage.azure.com/.default")
    assert identity_endpoint[-1]["client_id"] == [CLIENT_ID]
    by_key = make_blob_store(StorageSettings(credentials_block="restyle-azurite"))
    assert by_key.account_name == "devstoreaccount1"
    with pytest.raises(StorageNotConfiguredError, match="connection string, which carries"):
        make_blob_store(
            StorageSettings(credentials_block="restyle-azurite", identity_client_id=CLIENT_ID))


@pytest.mark.slow  # starts a real Prefect server
@pytest.mark.usefixtures("prefect_settings")
def test_a_service_principal_block_signs_in_as_it() -> None:
    AzureBlobStorageCredentials(
        account_url=ACCOUNT_URL, tenant_id="tenant", client_id="app", client_secret="s3cret"
    ).save("restyle-spn", overwrite=True)
    store = make_blob_store(StorageSettings(credentials_block="restyle-spn"))
    assert isinstance(store.client.credential, ClientSecretCredential)


@pytest.mark.slow  # starts a real Prefect server
@pytest.mark.usefixtures("prefect_settings")
def test_a_missing_block_is_a_clear_error() -> None:
    with pytest.raises(StorageNotConfiguredError, match="'no-such-block' could not be loaded"):
        make_blob_store(StorageSettings(credentials_block="no-such-block"))



def test_storage_signs_in_as_the_azure_ml_identity_by_default() -> None:
    settings = RestyleSettings(
        storage={"account_url": "https://acct.blob.core.windows.net"},
        azureml={"identity_client_id": "11111111-2222-3333-4444-555555555555"})
    assert settings.storage.identity_client_id == "11111111-2222-3333-4444-555555555555"


def test_two_different_identities_for_the_worker_are_refused() -> None:
    with pytest.raises(ValueError, match="different identities"):
        RestyleSettings(
            storage={"account_url": "https://acct.blob.core.windows.net",
                     "identity_client_id": "aaaaaaaa-2222-3333-4444-555555555555"},
            azureml={"identity_client_id": "11111111-2222-3333-4444-555555555555"})
