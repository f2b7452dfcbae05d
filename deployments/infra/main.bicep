// restyle on Azure: one resource group holding
//   * the DATA storage account (videos, stylized, styles, models, jobs containers) - Entra ID only,
//   * the SYSTEM storage account (Azure ML code snapshots, logs, run history) - separate, so
//     job code and logs never mix with user data and the data account can stay key-less,
//   * an Azure ML workspace with a low-priority GPU cluster that scales to zero,
//   * a user-assigned identity the cluster runs as: the job container, image pulls from the
//     registry, and the system account (snapshots, logs),
//   * an identity-based datastore 'restyle_jobs' over the data account's jobs container,
//   * an Event Grid system topic on the data account and (once the bridge is reachable) a
//     subscription delivering BlobCreated for videos/ and styles/ to the bridge webhook, with
//     undeliverable events dead-lettered to the data account's deadletter container,
//   * the Prefect side's secrets (a Prefect Cloud API key, the bridge's shared secret) in the
//     Key Vault, readable by the worker's identity only.
//
// Deploy (see README.md beside this file for the full sequence):
//   az deployment group create -g <rg> -f deployments/infra/main.bicep \
//     -p namePrefix=restyle workerPrincipalId=<object id> [bridgeEndpoint=https://...]

targetScope = 'resourceGroup'

@description('Azure region; defaults to the resource group\'s.')
param location string = resourceGroup().location

@description('Prefix of every resource name: 3-11 lower-case letters and digits, starting with a letter (storage account and registry names allow nothing else).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'restyle'

@description('Mixed into the generated name suffix. Change it to redeploy into a resource group whose earlier Key Vault or workspace is still soft-deleted under the old names.')
param nameSeed string = ''

@description('GPU VM size of the cluster (1x A100 80 GB; Standard_ND96isr_H100_v5 for 8x H100).')
param gpuVmSize string = 'Standard_NC24ads_A100_v4'

@description('Most nodes the cluster may scale out to (caps spending).')
@minValue(1)
param maxNodes int = 4

@description('Low-priority nodes: several times cheaper, can be preempted (the backend resubmits).')
param lowPriority bool = true

@description('Object id (principal id) of the identity running the Prefect worker/flows: it uploads job folders, submits jobs and issues user-delegation SAS links. Empty: no grants.')
param workerPrincipalId string = ''

@description('Principal type of workerPrincipalId: User for a person (az login), ServicePrincipal for a managed identity or app.')
@allowed([
  'User'
  'ServicePrincipal'
])
param workerPrincipalType string = 'ServicePrincipal'

@description('HTTPS URL of the Event Grid bridge: https://host/api/events with Entra ID delivery, or with ?code=<shared secret> appended. Empty: no subscription yet (deploy again once the bridge answers the validation handshake).')
@secure()
param bridgeEndpoint string = ''

@description('Keep shared-key access off on the system account too (Azure ML then reaches it with its identity). Set true only if the region rejects identity-only system datastores.')
param systemAllowSharedKeyAccess bool = false

@description('Tenant of the Entra application that protects the bridge (Entra ID delivery: Event Grid sends a bearer token, no secret in bridgeEndpoint). Empty: the shared secret in bridgeEndpoint.')
param bridgeEntraTenantId string = ''

@description('Client id or Application ID URI (api://...) of that Entra application.')
param bridgeEntraAppIdOrUri string = ''

@description('Days job folders (jobs container) are kept; the flow deletes a finished job\'s folders itself, this removes what failed or abandoned runs leave.')
@minValue(1)
param jobsRetentionDays int = 7

@description('Days dead-lettered events are kept in the deadletter container.')
@minValue(1)
param deadLetterRetentionDays int = 30

@description('Purge protection on the Key Vault: a deleted vault then cannot be purged for its retention period, so redeploying the same names needs a new nameSeed. Irreversible once on.')
param keyVaultPurgeProtection bool = false

@description('Prefect Cloud API key for the worker and bridge, stored as Key Vault secret prefect-api-key. Empty: no secret is written.')
@secure()
param prefectApiKey string = ''

@description('Shared secret of the bridge (when not using Entra ID delivery), stored as Key Vault secret bridge-shared-secret. Empty: no secret is written.')
@secure()
param bridgeSharedSecret string = ''

// Bicep has no regular expressions: every character of namePrefix is looked up in the allowed
// set, and a bad prefix stops the deployment at validation, before anything is created.
var lowerAlnum = 'abcdefghijklmnopqrstuvwxyz0123456789'
var prefixCharsAllowed = [for i in range(0, length(namePrefix)): contains(lowerAlnum, substring(namePrefix, i, 1))]
var prefixIsValid = !contains(prefixCharsAllowed, false) && !contains('0123456789', substring(namePrefix, 0, 1))
// int() of a sentence fails, and its error message carries the sentence.
var prefix = prefixIsValid ? namePrefix : string(int('namePrefix must be 3-11 lower-case letters and digits starting with a letter'))

var suffix = uniqueString(resourceGroup().id, prefix, nameSeed)
var dataAccountName = take('${prefix}data${suffix}', 24)
var systemAccountName = take('${prefix}sys${suffix}', 24)
var dataContainers = [
  'videos'
  'stylized'
  'styles'
  'models'
  'jobs'
  'deadletter'
]

// Built-in role definition ids (identical in every tenant).
var roles = {
  blobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  fileDataPrivilegedContributor: '69566ab7-960f-475b-8e7c-b3118f30c6bd'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
}

// ----------------------------------------------------------------------------- identity

resource jobIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-jobs'
  location: location
}

// ----------------------------------------------------------------------------- storage

resource dataAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: dataAccountName
  location: location
  kind: 'StorageV2' // Event Grid needs general-purpose v2 or BlobStorage
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // no account key, no account SAS: Entra ID and user-delegation SAS only
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
  }
}

resource dataBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: dataAccount
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for name in dataContainers: {
    parent: dataBlobService
    name: name
    properties: {
      publicAccess: 'None'
    }
  }
]

// Index into `containers` by name (Bicep loops are addressed by position).
var videosIdx = indexOf(dataContainers, 'videos')
var stylizedIdx = indexOf(dataContainers, 'stylized')
var stylesIdx = indexOf(dataContainers, 'styles')
var modelsIdx = indexOf(dataContainers, 'models')
var jobsIdx = indexOf(dataContainers, 'jobs')
var deadLetterIdx = indexOf(dataContainers, 'deadletter')

// Job folders and dead letters are working data: the lifecycle policy bounds both.
resource dataLifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: dataAccount
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-job-folders'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${dataContainers[jobsIdx]}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: jobsRetentionDays
                }
              }
            }
          }
        }
        {
          name: 'expire-dead-letters'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${dataContainers[deadLetterIdx]}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: deadLetterRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    containers
  ]
}

resource systemAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: systemAccountName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: systemAllowSharedKeyAccess
    allowCrossTenantReplication: false
  }
}

// ----------------------------------------------------------------------------- workspace

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${prefix}kv${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // The property accepts only true or absence; absent leaves a deleted vault purgeable, so
    // teardown can free the name (README step 9).
    enablePurgeProtection: keyVaultPurgeProtection ? true : null
  }
}

// The Prefect side's secrets: written only when given, read by the worker's identity.
resource prefectApiKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(prefectApiKey)) {
  parent: keyVault
  name: 'prefect-api-key'
  properties: {
    value: prefectApiKey
    contentType: 'Prefect Cloud API key (PREFECT_API_KEY)'
  }
}

resource bridgeSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(bridgeSharedSecret)) {
  parent: keyVault
  name: 'bridge-shared-secret'
  properties: {
    value: bridgeSharedSecret
    contentType: 'Event Grid bridge shared secret (RESTYLE_BRIDGE__SHARED_SECRET)'
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: take('${prefix}acr${suffix}', 50)
  location: location
  sku: {
    name: 'Basic'
  }
  properties: {
    adminUserEnabled: false
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = {
  name: '${prefix}-ml'
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    friendlyName: 'restyle'
    storageAccount: systemAccount.id // code snapshots and logs: the SYSTEM account
    keyVault: keyVault.id
    containerRegistry: registry.id
    systemDatastoresAuthMode: 'identity' // workspace datastores without account keys
    publicNetworkAccess: 'Enabled'
  }
}

resource cluster 'Microsoft.MachineLearningServices/workspaces/computes@2024-10-01' = {
  parent: workspace
  name: 'gpu-cluster'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${jobIdentity.id}': {}
    }
  }
  properties: {
    computeType: 'AmlCompute'
    properties: {
      vmSize: gpuVmSize
      vmPriority: lowPriority ? 'LowPriority' : 'Dedicated'
      osType: 'Linux'
      scaleSettings: {
        minNodeCount: 0 // nothing runs, nothing bills
        maxNodeCount: maxNodes
        nodeIdleTimeBeforeScaleDown: 'PT10M'
      }
    }
  }
}

// Identity-based: no credentials stored; jobs reach it as the cluster's identity.
resource jobsDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' = {
  parent: workspace
  name: 'restyle_jobs'
  properties: {
    datastoreType: 'AzureBlob'
    accountName: dataAccount.name
    containerName: dataContainers[jobsIdx]
    endpoint: environment().suffixes.storage
    protocol: 'https'
    credentials: {
      credentialsType: 'None'
    }
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
  }
  dependsOn: [
    containers
  ]
}

// ----------------------------------------------------------------------------- role assignments
// Data roles on the data account are granted per container, never on the account. The system
// account is the workspace's own, with shared keys off: whoever uploads code snapshots or reads
// logs there needs blob and file data roles on it (Microsoft's guide for such workspaces).

// Least privilege for tagging a blob with its processing state: Blob Data Contributor does not
// include tags/write, and Blob Data Owner would add more than tags.
resource blobTagger 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'restyle-blob-tagger')
  properties: {
    roleName: 'restyle blob tagger (${resourceGroup().name}, ${prefix})'
    description: 'Read and write blob index tags; granted per container by restyle.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read'
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write'
        ]
        notDataActions: []
      }
    ]
  }
}

// The GPU job reads its input and writes its output under jobs/.
resource jobIdentityOnJobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: containers[jobsIdx]
  name: guid(containers[jobsIdx].id, jobIdentity.id, roles.blobDataContributor)
  properties: {
    principalId: jobIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.blobDataContributor
    )
  }
}

// Azure ML pulls the job's image from the workspace registry as the cluster's identity.
resource jobIdentityAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: registry
  name: guid(registry.id, jobIdentity.id, roles.acrPull)
  properties: {
    principalId: jobIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
  }
}

// Code snapshots are read, and logs and outputs written, on the system account as that identity.
resource jobIdentityOnSystem 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: systemAccount
  name: guid(systemAccount.id, jobIdentity.id, roles.blobDataContributor)
  properties: {
    principalId: jobIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.blobDataContributor
    )
  }
}

// The workspace reaches its own identity-mode storage with its system identity.
var systemDataRoles = [
  roles.blobDataContributor
  roles.fileDataPrivilegedContributor
]

resource workspaceOnSystem 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in systemDataRoles: {
    scope: systemAccount
    name: guid(systemAccount.id, workspace.id, role)
    properties: {
      principalId: workspace.identity.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    }
  }
]

// The workspace identity lists the datastore for Studio's data browser (read only).
resource workspaceOnJobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: containers[jobsIdx]
  name: guid(containers[jobsIdx].id, workspace.id, roles.blobDataReader)
  properties: {
    principalId: workspace.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.blobDataReader
    )
  }
}

// The Prefect side: reads uploads and styles, writes results, models and job folders, and tags
// a failed input (a video or a style image) so the failure shows on the blob itself.
var workerGrants = [
  {
    idx: videosIdx
    role: roles.blobDataContributor
  }
  {
    idx: videosIdx
    role: blobTagger.name
  }
  {
    idx: stylizedIdx
    role: roles.blobDataContributor
  }
  {
    idx: stylesIdx
    role: roles.blobDataReader
  }
  {
    idx: stylesIdx
    role: blobTagger.name
  }
  {
    idx: modelsIdx
    role: roles.blobDataContributor
  }
  {
    idx: jobsIdx
    role: roles.blobDataContributor
  }
]

// Filtered arrays rather than `if` inside the loop: the same meaning, and Python's Bicep parser
// (the test of this file) reads it.
resource workerOnContainers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in (empty(workerPrincipalId) ? [] : workerGrants): {
    scope: containers[grant.idx]
    name: guid(containers[grant.idx].id, workerPrincipalId, grant.role)
    properties: {
      principalId: workerPrincipalId
      principalType: workerPrincipalType
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
    }
    dependsOn: [
      blobTagger
    ]
  }
]

// Submitting a job uploads its code snapshot to the system account, which has shared keys off.
resource workerOnSystem 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in (empty(workerPrincipalId) ? [] : systemDataRoles): {
    scope: systemAccount
    name: guid(systemAccount.id, workerPrincipalId, role)
    properties: {
      principalId: workerPrincipalId
      principalType: workerPrincipalType
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    }
  }
]

// Get User Delegation Key is an account-level action; the SAS it signs is still limited by the
// signer's container-scoped data roles above (read on stylized/ for result links).
resource workerDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(workerPrincipalId)) {
  scope: dataAccount
  name: guid(dataAccount.id, workerPrincipalId, roles.blobDelegator)
  properties: {
    principalId: workerPrincipalId
    principalType: workerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDelegator)
  }
}

resource workerOnWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(workerPrincipalId)) {
  scope: workspace
  name: guid(workspace.id, workerPrincipalId, roles.azureMLDataScientist)
  properties: {
    principalId: workerPrincipalId
    principalType: workerPrincipalType
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.azureMLDataScientist
    )
  }
}

// The worker host reads the Prefect API key (and the bridge's secret) at start-up.
resource workerSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(workerPrincipalId)) {
  scope: keyVault
  name: guid(keyVault.id, workerPrincipalId, roles.keyVaultSecretsUser)
  properties: {
    principalId: workerPrincipalId
    principalType: workerPrincipalType
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.keyVaultSecretsUser
    )
  }
}

// ----------------------------------------------------------------------------- events

// The topic's own identity writes dead letters: the data account accepts no keys.
resource dataTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${prefix}-data-events'
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: dataAccount.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource topicOnDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: containers[deadLetterIdx]
  name: guid(containers[deadLetterIdx].id, dataTopic.id, roles.blobDataContributor)
  properties: {
    principalId: dataTopic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      roles.blobDataContributor
    )
  }
}

var entraDelivery = !empty(bridgeEntraTenantId) && !empty(bridgeEntraAppIdOrUri)
var webhookBase = {
  endpointUrl: bridgeEndpoint // write-only in ARM: a ?code= secret is never read back
  maxEventsPerBatch: 10
  preferredBatchSizeInKilobytes: 64
}
// Entra ID delivery: Event Grid asks Entra ID for a token for this application and sends it as
// a bearer token; the bridge checks it (deployments/bridge_auth.py).
var webhookEntra = entraDelivery ? {
  azureActiveDirectoryTenantId: bridgeEntraTenantId
  azureActiveDirectoryApplicationIdOrUri: bridgeEntraAppIdOrUri
} : {}

// Created only when the bridge URL is given: Event Grid validates the endpoint on creation
// (CloudEvents: the OPTIONS abuse-protection handshake), so the bridge must already answer.
resource bridgeSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (!empty(bridgeEndpoint)) {
  parent: dataTopic
  name: 'blob-created-to-bridge'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'WebHook'
      properties: union(webhookBase, webhookEntra)
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      // subjectBeginsWith takes one prefix; an advanced filter ORs its values.
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'subject'
          values: [
            '/blobServices/default/containers/videos/'
            '/blobServices/default/containers/styles/'
          ]
        }
      ]
      enableAdvancedFilteringOnArrays: false
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    // Events the bridge refuses (4xx) or that outlive the retries land here instead of being
    // dropped; the bridge never watches this container.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: dataAccount.id
          blobContainerName: dataContainers[deadLetterIdx]
        }
      }
    }
  }
  dependsOn: [
    topicOnDeadLetters
  ]
}

// ----------------------------------------------------------------------------- outputs
// Each maps to one RESTYLE_* variable of the Prefect worker (see README.md).

output subscriptionId string = subscription().subscriptionId
output resourceGroupName string = resourceGroup().name
output workspaceName string = workspace.name
output computeName string = cluster.name
output dataAccountUrl string = dataAccount.properties.primaryEndpoints.blob
output jobsDatastore string = jobsDatastore.name
output jobIdentityClientId string = jobIdentity.properties.clientId
output systemAccountName string = systemAccount.name
output eventTopicName string = dataTopic.name
output keyVaultName string = keyVault.name
output deadLetterContainer string = dataContainers[deadLetterIdx]
