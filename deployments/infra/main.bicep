// restyle on Azure: one resource group holding
//   * the DATA storage account (videos, stylized, styles, models, jobs containers) - Entra ID only,
//   * the SYSTEM storage account (Azure ML code snapshots, logs, run history) - separate, so
//     job code and logs never mix with user data and the data account can stay key-less,
//   * an Azure ML workspace with a low-priority GPU cluster that scales to zero,
//   * a user-assigned identity the cluster runs as, allowed into the job container only,
//   * an identity-based datastore 'restyle_jobs' over the data account's jobs container,
//   * an Event Grid system topic on the data account and (once the bridge is reachable) a
//     subscription delivering BlobCreated for videos/ and styles/ to the bridge webhook.
//
// Deploy (see README.md beside this file for the full sequence):
//   az deployment group create -g <rg> -f deployments/infra/main.bicep \
//     -p namePrefix=restyle workerPrincipalId=<object id> [bridgeEndpoint=https://...?code=...]

targetScope = 'resourceGroup'

@description('Azure region; defaults to the resource group\'s.')
param location string = resourceGroup().location

@description('Prefix of every resource name (lower case letters and digits, 3-11 characters).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'restyle'

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

@description('HTTPS URL of the Event Grid bridge including ?code=<shared secret>. Empty: no subscription yet (deploy again once the bridge answers the validation handshake).')
@secure()
param bridgeEndpoint string = ''

@description('Keep shared-key access off on the system account too (Azure ML then reaches it with its identity). Set true only if the region rejects identity-only system datastores.')
param systemAllowSharedKeyAccess bool = false

var suffix = uniqueString(resourceGroup().id, namePrefix)
var dataAccountName = take('${namePrefix}data${suffix}', 24)
var systemAccountName = take('${namePrefix}sys${suffix}', 24)
var dataContainers = [
  'videos'
  'stylized'
  'styles'
  'models'
  'jobs'
]

// Built-in role definition ids (identical in every tenant).
var roles = {
  blobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
}

// ----------------------------------------------------------------------------- identity

resource jobIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-jobs'
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
  name: take('${namePrefix}kv${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: take('${namePrefix}acr${suffix}', 50)
  location: location
  sku: {
    name: 'Basic'
  }
  properties: {
    adminUserEnabled: false
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = {
  name: '${namePrefix}-ml'
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
// Every data grant is scoped to ONE container, never the account.

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

// The Prefect side: reads uploads and styles, writes results, models and job folders.
var workerGrants = [
  {
    idx: videosIdx
    role: roles.blobDataContributor // tags the source with its processing state
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
    idx: modelsIdx
    role: roles.blobDataContributor
  }
  {
    idx: jobsIdx
    role: roles.blobDataContributor
  }
]

resource workerOnContainers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in workerGrants: if (!empty(workerPrincipalId)) {
    scope: containers[grant.idx]
    name: guid(containers[grant.idx].id, workerPrincipalId, grant.role)
    properties: {
      principalId: workerPrincipalId
      principalType: workerPrincipalType
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
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

// ----------------------------------------------------------------------------- events

resource dataTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${namePrefix}-data-events'
  location: location
  properties: {
    source: dataAccount.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Created only when the bridge URL is given: Event Grid validates the endpoint on creation
// (CloudEvents: the OPTIONS abuse-protection handshake), so the bridge must already answer.
resource bridgeSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (!empty(bridgeEndpoint)) {
  parent: dataTopic
  name: 'blob-created-to-bridge'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: bridgeEndpoint // write-only in ARM: the ?code= secret is never read back
        maxEventsPerBatch: 10
        preferredBatchSizeInKilobytes: 64
      }
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
  }
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
