metadata description = '''
One relay region: Service Bus namespace, the shared topic, the Function App subscriptions
(router, persist, webpubsub) with their SQL rules, pre-provisioned node subscriptions, the
on-premise Listen+Send policy and the Function identity's data-plane roles.
Every name, rule and property comes from socketio_servicebus/topology.json.
'''

@description('Logical region name (the key in SIO_REGION_MAP).')
param regionName string

@description('Namespace name (globally unique).')
param namespaceName string

@description('Azure location of the namespace.')
param location string

@description('Resource tags.')
param tags object = {}

@description('Namespace tier. Standard is enough for topics and SQL filters; Premium adds isolation, larger messages, availability zones.')
@allowed([
  'Standard'
  'Premium'
])
param skuName string = 'Standard'

@description('Messaging units when skuName is Premium.')
@allowed([
  1
  2
  4
  8
  16
])
param premiumCapacity int = 1

@description('Principal id of the Function App identity (gets Service Bus Data Sender + Receiver on this namespace).')
param functionPrincipalId string

@description('On-premise node ids in this region: each gets a pre-provisioned subscription; the topic gets the Listen+Send SAS policy.')
param onPremNodes string[] = []

@description('Cloud relay node ids that use pre-provisioned subscriptions (no Manage right), in addition to onPremNodes.')
param preProvisionedRelayNodes string[] = []

var topology = loadJsonContent('../../socketio_servicebus/topology.json')
var functionSubscriptionList = items(topology.functionSubscriptions)
var nodeTemplate = topology.nodeSubscription
var preProvisionedNodes = concat(onPremNodes, preProvisionedRelayNodes)
var standardSku = { name: 'Standard', tier: 'Standard' }
var premiumSku = { name: 'Premium', tier: 'Premium', capacity: premiumCapacity }
var functionRoleIds = [
  topology.roles.serviceBusDataSender
  topology.roles.serviceBusDataReceiver
]

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: union(tags, { 'sio-region': regionName })
  sku: skuName == 'Premium' ? premiumSku : standardSku
  properties: {
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    // SAS is only needed by on-premise nodes; without them everything is Entra ID only.
    disableLocalAuth: empty(onPremNodes)
  }
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
  parent: namespace
  name: topology.topic
  properties: {
    enableBatchedOperations: true
    maxSizeInMegabytes: topology.topicProperties.maxSizeInMegabytes
    defaultMessageTimeToLive: topology.topicProperties.defaultMessageTimeToLive
    // router retries re-send with the same message id: Service Bus drops the copy
    requiresDuplicateDetection: topology.topicProperties.requiresDuplicateDetection
    duplicateDetectionHistoryTimeWindow: topology.topicProperties.duplicateDetectionHistoryTimeWindow
    supportOrdering: false
  }
}

// Function App subscriptions: router, persist, webpubsub.
resource functionSubscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = [
  for sub in functionSubscriptionList: {
    parent: topic
    name: sub.value.name
    properties: {
      lockDuration: sub.value.lockDuration
      maxDeliveryCount: sub.value.maxDeliveryCount
      defaultMessageTimeToLive: sub.value.defaultMessageTimeToLive
      deadLetteringOnMessageExpiration: false
      deadLetteringOnFilterEvaluationExceptions: true
      enableBatchedOperations: true
      requiresSession: false
    }
  }
]

// Creating a rule through the resource provider replaces the implicit $Default (1=1) rule.
resource functionRules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2024-01-01' = [
  for (sub, i) in functionSubscriptionList: {
    parent: functionSubscriptions[i]
    name: sub.value.rule
    properties: {
      filterType: 'SqlFilter'
      sqlFilter: {
        sqlExpression: sub.value.sql
      }
    }
  }
]

// Pre-provisioned node subscriptions (on-premise nodes, and cloud relays in 'preProvisioned' mode).
// autoDeleteOnIdle is deliberately not set (service default P10675199DT2H48M5.4775807S = never):
// the node cannot re-create its subscription with Listen+Send only.
resource nodeSubscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = [
  for node in preProvisionedNodes: {
    parent: topic
    name: '${nodeTemplate.prefix}${node}'
    properties: {
      lockDuration: nodeTemplate.lockDuration
      maxDeliveryCount: nodeTemplate.maxDeliveryCount
      defaultMessageTimeToLive: nodeTemplate.defaultMessageTimeToLive
      deadLetteringOnMessageExpiration: false
      deadLetteringOnFilterEvaluationExceptions: true
      enableBatchedOperations: true
      requiresSession: false
    }
  }
]

resource nodeRules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2024-01-01' = [
  for (node, i) in preProvisionedNodes: {
    parent: nodeSubscriptions[i]
    name: nodeTemplate.rule
    properties: {
      filterType: 'SqlFilter'
      sqlFilter: {
        sqlExpression: replace(nodeTemplate.sqlTemplate, '{node}', node)
      }
    }
  }
]

// Topic-scoped SAS policy for on-premise nodes: Listen + Send, no Manage.
resource onPremPolicy 'Microsoft.ServiceBus/namespaces/topics/authorizationRules@2024-01-01' = if (!empty(onPremNodes)) {
  parent: topic
  name: topology.onPremPolicy
  properties: {
    rights: [
      'Listen'
      'Send'
    ]
  }
}

// The single Function App serves every region: it receives here and forwards here from other regions.
resource functionRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in functionRoleIds: {
    name: guid(namespace.id, functionPrincipalId, roleId)
    scope: namespace
    properties: {
      principalId: functionPrincipalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

output id string = namespace.id
output name string = namespace.name
// serviceBusEndpoint is 'https://<fqdn>:443/'
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '/')[2], ':')[0]
output topicName string = topic.name
output onPremPolicyId string = empty(onPremNodes) ? '' : onPremPolicy.id
output nodeSubscriptionNames string[] = [for node in preProvisionedNodes: '${nodeTemplate.prefix}${node}']
