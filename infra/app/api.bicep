metadata description = '''
The socketio-servicebus Function App (router, persist, webpubsub, HTTP emit/history) and its
identity-based app settings. Setting names come from socketio_servicebus/topology.json (appSettings,
regionConnectionTemplate); infra/README.md lists every one of them.
'''

@description('Function App name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure location.')
param location string

@description('Tags for the plan.')
param tags object = {}

@description('azd service name (tag azd-service-name).')
param serviceName string = 'api'

@description('User-assigned identity resource id.')
param identityId string

@description('User-assigned identity client id.')
param identityClientId string

@description('Host storage account name (AzureWebJobsStorage, deployment container).')
param storageAccountName string

@description('Deployment package container in the host storage account.')
param deploymentContainerName string

@description('Application Insights connection string.')
param applicationInsightsConnectionString string

@description('Share of new traces sampled (parent-based: a traced emit from a node is kept whatever this says).')
param traceSampleRatio string = '0.01'

@description('Home region: the region whose namespace the default ServiceBusConnection points at (SIO_REGION).')
param homeRegion string

@description('Region map (regionName -> { fullyQualifiedNamespace, neighbors? }); becomes SIO_REGION_MAP as JSON.')
param regionMap object

@description('Table service endpoint of the events storage account, e.g. https://<account>.table.core.windows.net/.')
param tableServiceUri string

@description('Table holding persisted events.')
param historyTable string

@description('Web PubSub endpoint, e.g. https://<name>.webpubsub.azure.com.')
param webPubSubEndpoint string

@description('Web PubSub hub.')
param webPubSubHub string

@description('Optional Python module with hooks (SIO_HOOKS_MODULE); empty leaves the setting out.')
param hooksModule string = ''

@secure()
@description('History token key (SIO_HISTORY_TOKEN_KEY, >= 32 characters; the relay nodes hold the same one).')
@minLength(32)
param historyTokenKey string

@secure()
@description('Previous history token key, accepted during a rotation (SIO_HISTORY_TOKEN_KEY_PREVIOUS); empty leaves the setting out.')
param historyTokenKeyPrevious string = ''

@secure()
@description('Cloud trust zone key (SIO_ZONE_KEY of zone "cloud"): the app verifies, polices and signs bus messages with it; empty = zones off.')
param cloudZoneKey string = ''

@description('Zone document (SIO_ZONES): public keys and policy of the on-premise sites.')
param zonesDocument string = ''

@description('Origins allowed by CORS (the relay pages that call GET /api/history); empty = no CORS rule.')
param corsAllowedOrigins string[] = []

@description('Upper bound of instances.')
param maximumInstanceCount int = 100

@description('Instance memory size in MB.')
param instanceMemoryMB int = 2048

var topology = loadJsonContent('../../socketio_servicebus/topology.json')
var names = topology.appSettings
var sbConnection = names.serviceBusConnection
var tablesConnection = names.tablesConnection
var webPubSubConnection = names.webPubSubConnection

// Identity-based connection: <prefix>__credential + <prefix>__clientId select the user-assigned identity.
var coreSettings = {
  // Default Service Bus connection = home region namespace.
  '${sbConnection}__fullyQualifiedNamespace': regionMap[homeRegion].fullyQualifiedNamespace
  '${sbConnection}__credential': 'managedidentity'
  '${sbConnection}__clientId': identityClientId

  '${tablesConnection}__tableServiceUri': tableServiceUri
  '${tablesConnection}__credential': 'managedidentity'
  '${tablesConnection}__clientId': identityClientId

  // __serviceUri is what the Functions Web PubSub extension reads; __endpoint is the same URL for the
  // azure-messaging-webpubsubservice SDK path.
  '${webPubSubConnection}__serviceUri': webPubSubEndpoint
  '${webPubSubConnection}__endpoint': webPubSubEndpoint
  '${webPubSubConnection}__credential': 'managedidentity'
  '${webPubSubConnection}__clientId': identityClientId

  '${names.region}': homeRegion
  '${names.regionMap}': string(regionMap)
  '${names.topic}': topology.topic
  '${names.historyTable}': historyTable
  '${names.webPubSubHub}': webPubSubHub

  // SDK clients created in code (DefaultAzureCredential) use the same identity.
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Traces (docs/observability.md): the worker exports its spans to the same Application Insights
  // (socketio_servicebus.otel); host.json "telemetryMode": "OpenTelemetry" does the same for the host.
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  OTEL_TRACES_SAMPLER: 'parentbased_traceidratio'
  OTEL_TRACES_SAMPLER_ARG: traceSampleRatio
}

var hookSettings = empty(hooksModule) ? {} : { '${names.hooksModule}': hooksModule }

// GET /api/history verifies history tokens with these (current + previous during a rotation).
var historySettings = union(
  { '${names.historyTokenKey}': historyTokenKey },
  empty(historyTokenKeyPrevious) ? {} : { '${names.historyTokenKeyPrevious}': historyTokenKeyPrevious }
)

// Trust zones (socketio_servicebus.zones): the Function App is in the cloud zone and holds its key.
var zoneSettings = empty(cloudZoneKey) ? {} : union(
  {
    SIO_ZONE: 'cloud'
    SIO_ZONE_KEY: cloudZoneKey
  },
  empty(zonesDocument) ? {} : { SIO_ZONES: zonesDocument }
)

// One connection per region: ServiceBusConnection_<region>__fullyQualifiedNamespace / __credential / __clientId.
var regionSettings = reduce(items(regionMap), {}, (acc, region) => union(acc, {
  '${replace(topology.regionConnectionTemplate, '{region}', region.key)}__fullyQualifiedNamespace': region.value.fullyQualifiedNamespace
  '${replace(topology.regionConnectionTemplate, '{region}', region.key)}__credential': 'managedidentity'
  '${replace(topology.regionConnectionTemplate, '{region}', region.key)}__clientId': identityClientId
}))

module functionApp '../core/host/functions-flex.bicep' = {
  name: 'functionapp-flex'
  params: {
    name: name
    planName: planName
    location: location
    tags: tags
    siteTags: union(tags, { 'azd-service-name': serviceName })
    identityId: identityId
    identityClientId: identityClientId
    storageAccountName: storageAccountName
    deploymentContainerName: deploymentContainerName
    runtimeName: 'python'
    runtimeVersion: '3.11'
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSettings: union(coreSettings, hookSettings, regionSettings, zoneSettings, historySettings)
    corsAllowedOrigins: corsAllowedOrigins
  }
}

output name string = functionApp.outputs.name
output uri string = functionApp.outputs.uri
// names only, and none computed from a secure value (SIO_HISTORY_TOKEN_KEY_PREVIOUS appears only during a rotation)
output appSettingNames string[] = concat(map(items(union(coreSettings, hookSettings, regionSettings)), s => s.key), [
  names.historyTokenKey
])
