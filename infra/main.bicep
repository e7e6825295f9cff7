targetScope = 'subscription'

metadata description = '''
socketio-servicebus: per-region Service Bus namespaces sharing one topic, one Flex Consumption
Function App that routes between regions, persists to Table Storage and feeds Azure Web PubSub,
optional on-premise nodes (SAS Listen+Send, pre-provisioned subscriptions) and optional cloud
relay nodes on Azure Container Apps. All Service Bus names come from socketio_servicebus/topology.json.
'''

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd env name); drives the resource group name, resourceToken and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Primary location: resource group, Function App (must offer Flex Consumption), storage, monitoring, Web PubSub.')
param location string

@description('Resource group name; empty = rg-<environmentName>.')
param resourceGroupName string = ''

@minLength(1)
@description('Relay regions. The first one is the home region (SIO_REGION, default ServiceBusConnection).')
param regions regionConfig[]

@description('Service Bus tier for every regional namespace.')
@allowed([
  'Standard'
  'Premium'
])
param serviceBusSku string = 'Standard'

@description('Messaging units per namespace when serviceBusSku is Premium.')
@allowed([
  1
  2
  4
  8
  16
])
param serviceBusPremiumCapacity int = 1

@description('DNS suffix of Service Bus namespaces in this cloud (used to build SIO_REGION_MAP before the namespaces exist).')
param serviceBusDnsSuffix string = 'servicebus.windows.net'

@description('Web PubSub SKU.')
@allowed([
  'Free_F1'
  'Standard_S1'
  'Premium_P1'
])
param webPubSubSku string = 'Free_F1'

@description('Web PubSub units (ignored for Free_F1).')
@minValue(1)
param webPubSubCapacity int = 1

@description('Flex Consumption: maximum instance count.')
@minValue(40)
@maxValue(1000)
param functionMaximumInstanceCount int = 100

@description('Flex Consumption: instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Optional SIO_HOOKS_MODULE value (Python module with routing/persistence hooks).')
param hooksModule string = ''

@secure()
@minLength(32)
@description('''
History token key (SIO_HISTORY_TOKEN_KEY): at least 32 random characters, shared by the Function App
(verifies) and the relay nodes (sign). Written as a Function App setting and a Container Apps secret;
never an output. Generate with: python -c 'import secrets; print(secrets.token_urlsafe(32))'.
On-premise nodes get it out of band (docs/security.md: what that key allows).
''')
param historyTokenKey string

@secure()
@description('During a key rotation only: the previous history token key (SIO_HISTORY_TOKEN_KEY_PREVIOUS on the Function App, still accepted); empty otherwise.')
param historyTokenKeyPrevious string = ''

@secure()
@description('''
Cloud trust zone key (SIO_ZONE_KEY, zone "cloud"): a base64url 32-byte Ed25519 seed shared by the
Function App and the cloud relay nodes, which sign every Service Bus message with it and verify
what they receive (docs/security.md, "Trust zones"). Generate with:
python -m socketio_servicebus.zones keygen cloud. Empty = zones off (every key holder is trusted).
''')
param cloudZoneKey string = ''

@description('Zone document (SIO_ZONES, JSON): the public keys, node ids and room prefixes of every on-premise site; no secret. Only used with cloudZoneKey.')
param zonesDocument string = ''

@description('Browser origins allowed to call the Function App (CORS), e.g. the relay nodes\' public URLs (output RELAY_NODES) and on-premise pages. Empty = no CORS rule.')
param historyCorsOrigins string[] = []

@description('Cloud relay node image. Empty = no cloud relay nodes are deployed, whatever regions[].relayNodes says.')
param relayImage string = ''

@description('Registry login server for relayImage when pulled with the node identity (grant AcrPull yourself); empty for public images.')
param relayRegistryServer string = ''

@description('Port the relay container listens on.')
param relayTargetPort int = 8000

@description('''
How cloud relay nodes get their subscription:
dataOwner = the node creates its own auto-deleting subscription (role Azure Service Bus Data Owner on its namespace; may scale out);
preProvisioned = node-<nodeId> is created here with the node rule (roles Data Sender on the topic + Data Receiver on that subscription; one replica).
''')
@allowed([
  'dataOwner'
  'preProvisioned'
])
param relaySubscriptionAccess string = 'dataOwner'

@description('Replica upper bound per relay node in dataOwner mode.')
@minValue(1)
@maxValue(30)
param relayMaxReplicas int = 3

@secure()
@description('Cloud relay nodes: HS256 secret (>= 32 characters) of the clients\' JWTs. With relayImage set, give it or relayAuthJwtPublicKey (with issuer and audience), or set relayAllowAnonymousClients.')
param relayAuthJwtKey string = ''

@description('Cloud relay nodes: PEM public key of the identity provider signing the clients\' RS256 JWTs.')
param relayAuthJwtPublicKey string = ''

@description('Cloud relay nodes: required JWT iss claim.')
param relayAuthJwtIssuer string = ''

@description('Cloud relay nodes: required JWT aud claim.')
param relayAuthJwtAudience string = ''

@description('Cloud relay nodes WITHOUT client auth: anyone on the internet may connect, join rooms and chat (a public demo only). Without it and without relayAuthJwtKey/relayAuthJwtPublicKey the deployment fails at validation.')
param relayAllowAnonymousClients bool = false

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

@description('One relay region.')
type regionConfig = {
  @description('Logical region name: lowercase letters and digits only (it is part of app setting names and resource names). Usually the Azure location.')
  @minLength(1)
  @maxLength(20)
  name: string

  @description('Azure location of the region\'s namespace (and relay nodes). Defaults to name.')
  location: string?

  @description('Regions the router forwards to. Omitted = the router decides (full mesh).')
  neighbors: string[]?

  @description('On-premise node ids homed in this region: pre-provisioned subscriptions + Listen/Send SAS policy.')
  onPremNodes: string[]?

  @description('Cloud relay node ids in this region (Azure Container Apps; only when relayImage is set).')
  relayNodes: string[]?
}

// ---------------------------------------------------------------------------------------------
// Variables
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var topology = loadJsonContent('../socketio_servicebus/topology.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var rgName = !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
var deployRelays = !empty(relayImage)
var deploymentContainerName = 'app-package-${take(resourceToken, 7)}'
var historyTable = topology.defaults.historyTable
var webPubSubHub = topology.defaults.webPubSubHub

var regionInfos = [
  for r in regions: {
    name: r.name
    location: r.?location ?? r.name
    namespaceName: '${abbrs.serviceBusNamespaces}${resourceToken}-${r.name}'
    fullyQualifiedNamespace: '${abbrs.serviceBusNamespaces}${resourceToken}-${r.name}.${serviceBusDnsSuffix}'
    neighbors: r.?neighbors
    onPremNodes: r.?onPremNodes ?? []
    relayNodes: deployRelays ? (r.?relayNodes ?? []) : []
  }
]

// SIO_REGION_MAP: { "<region>": { "fullyQualifiedNamespace": "...", "neighbors": [...] (only if given) } }
var regionMap = toObject(regionInfos, r => r.name, r => r.neighbors == null ? { fullyQualifiedNamespace: r.fullyQualifiedNamespace } : { fullyQualifiedNamespace: r.fullyQualifiedNamespace, neighbors: r.neighbors })

var relayNodeList = flatten(map(regionInfos, r => map(r.relayNodes, n => { region: r.name, location: r.location, node: n, namespaceName: r.namespaceName, environmentName: '${abbrs.appManagedEnvironments}${resourceToken}-${r.name}' })))

var relayRegions = filter(regionInfos, r => !empty(r.relayNodes))

var onPremCommandPrefix = 'az servicebus topic authorization-rule keys list --subscription ${subscription().subscriptionId} --resource-group ${rgName}'

var onPremNodeList = flatten(map(regionInfos, r => map(r.onPremNodes, n => {
  region: r.name
  node: n
  fullyQualifiedNamespace: r.fullyQualifiedNamespace
  topic: topology.topic
  subscription: '${topology.nodeSubscription.prefix}${n}'
  authorizationRuleId: '${subscription().id}/resourceGroups/${rgName}/providers/Microsoft.ServiceBus/namespaces/${r.namespaceName}/topics/${topology.topic}/authorizationRules/${topology.onPremPolicy}'
  connectionStringCommand: '${onPremCommandPrefix} --namespace-name ${r.namespaceName} --topic-name ${topology.topic} --name ${topology.onPremPolicy} --query primaryConnectionString --output tsv'
})))

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: rgName
  location: location
  tags: tags
}

module identity 'core/security/user-assigned-identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    metricsPublisherPrincipalIds: [
      identity.outputs.principalId
    ]
    metricsPublisherRoleId: topology.roles.monitoringMetricsPublisher
  }
}

// Host storage: AzureWebJobsStorage (identity-based) and the Flex Consumption deployment container.
module hostStorage 'core/storage/storage-account.bicep' = {
  name: 'host-storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    containers: [
      deploymentContainerName
    ]
    roleAssignments: [
      {
        principalId: identity.outputs.principalId
        roleDefinitionId: topology.roles.storageBlobDataOwner
      }
      {
        principalId: identity.outputs.principalId
        roleDefinitionId: topology.roles.storageQueueDataContributor
      }
      {
        principalId: identity.outputs.principalId
        roleDefinitionId: topology.roles.storageTableDataContributor
      }
    ]
  }
}

// Events storage: Table Storage for persisted events (history API).
module eventsStorage 'core/storage/storage-account.bicep' = {
  name: 'events-storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}ev${resourceToken}'
    location: location
    tags: tags
    tables: [
      historyTable
    ]
    roleAssignments: [
      {
        principalId: identity.outputs.principalId
        roleDefinitionId: topology.roles.storageTableDataContributor
      }
    ]
  }
}

module webPubSub 'core/pubsub/webpubsub.bicep' = {
  name: 'webpubsub'
  scope: rg
  params: {
    name: '${abbrs.signalRServiceWebPubSub}${resourceToken}'
    location: location
    tags: tags
    skuName: webPubSubSku
    capacity: webPubSubCapacity
    hubName: webPubSubHub
    serviceOwnerPrincipalIds: [
      identity.outputs.principalId
    ]
    serviceOwnerRoleId: topology.roles.webPubSubServiceOwner
  }
}

module serviceBus 'app/servicebus-region.bicep' = [
  for r in regionInfos: {
    name: 'servicebus-${r.name}'
    scope: rg
    params: {
      regionName: r.name
      namespaceName: r.namespaceName
      location: r.location
      tags: tags
      skuName: serviceBusSku
      premiumCapacity: serviceBusPremiumCapacity
      functionPrincipalId: identity.outputs.principalId
      onPremNodes: r.onPremNodes
      preProvisionedRelayNodes: relaySubscriptionAccess == 'preProvisioned' ? r.relayNodes : []
    }
  }
]

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: '${abbrs.webSitesFunctions}${resourceToken}'
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: hostStorage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    homeRegion: regionInfos[0].name
    regionMap: regionMap
    tableServiceUri: eventsStorage.outputs.primaryTableEndpoint
    historyTable: historyTable
    webPubSubEndpoint: webPubSub.outputs.endpoint
    webPubSubHub: webPubSubHub
    hooksModule: hooksModule
    historyTokenKey: historyTokenKey
    historyTokenKeyPrevious: historyTokenKeyPrevious
    cloudZoneKey: cloudZoneKey
    zonesDocument: zonesDocument
    corsAllowedOrigins: historyCorsOrigins
    maximumInstanceCount: functionMaximumInstanceCount
    instanceMemoryMB: functionInstanceMemoryMB
  }
  // Namespaces, topics, subscriptions and role assignments exist before the triggers start.
  dependsOn: [
    serviceBus
  ]
}

module relayEnvironments 'core/host/container-apps-environment.bicep' = [
  for r in relayRegions: {
    name: 'relay-env-${r.name}'
    scope: rg
    params: {
      name: '${abbrs.appManagedEnvironments}${resourceToken}-${r.name}'
      location: r.location
      tags: tags
      logAnalyticsWorkspaceName: monitoring.outputs.logAnalyticsWorkspaceName
    }
  }
]

module relays 'app/relay-containerapp.bicep' = [
  for n in relayNodeList: {
    name: 'relay-${n.node}'
    scope: rg
    params: {
      name: '${abbrs.appContainerApps}${n.node}'
      location: n.location
      tags: tags
      containerAppsEnvironmentName: n.environmentName
      image: relayImage
      registryServer: relayRegistryServer
      targetPort: relayTargetPort
      regionName: n.region
      nodeId: n.node
      serviceBusNamespaceName: n.namespaceName
      subscriptionAccess: relaySubscriptionAccess
      maxReplicas: relayMaxReplicas
      historyTokenKey: historyTokenKey
      cloudZoneKey: cloudZoneKey
      zonesDocument: zonesDocument
      historyUrl: '${api.outputs.uri}/api/history'
      authJwtKey: relayAuthJwtKey
      authJwtPublicKey: relayAuthJwtPublicKey
      authJwtIssuer: relayAuthJwtIssuer
      authJwtAudience: relayAuthJwtAudience
      allowAnonymousClients: relayAllowAnonymousClients
    }
    dependsOn: [
      relayEnvironments
      serviceBus
    ]
  }
]

// ---------------------------------------------------------------------------------------------
// Outputs (azd writes these into .azure/<env>/.env)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output SIO_TOPIC string = topology.topic
output SIO_REGION string = regionInfos[0].name
output SIO_REGION_MAP object = regionMap
output SIO_HISTORY_TABLE string = historyTable
output SIO_WEBPUBSUB_HUB string = webPubSubHub
output SERVICEBUS_NAMESPACES array = [
  for (r, i) in regionInfos: {
    region: r.name
    name: serviceBus[i].outputs.name
    fullyQualifiedNamespace: serviceBus[i].outputs.fullyQualifiedNamespace
  }
]
output TABLES_ENDPOINT string = eventsStorage.outputs.primaryTableEndpoint
output WEBPUBSUB_ENDPOINT string = webPubSub.outputs.endpoint
output FUNCTION_APP_SETTING_NAMES array = api.outputs.appSettingNames
// What to hand to each on-premise node. No secret here: run connectionStringCommand to read the key.
output ON_PREM_NODES array = onPremNodeList
output RELAY_NODES array = [
  for (n, i) in relayNodeList: {
    region: n.region
    node: n.node
    uri: relays[i].outputs.uri
  }
]
