metadata description = '''
Optional cloud relay node: one Azure Container App running the python-socketio relay image,
with sticky sessions (Socket.IO long-polling needs every request of a session on the same replica),
its own user-assigned identity and Service Bus data-plane roles on its region's namespace.
'''

@description('Container App name (2-32 lowercase letters, digits, hyphens).')
@maxLength(32)
param name string

@description('Azure location (the region of its namespace).')
param location string

@description('Resource tags.')
param tags object = {}

@description('Existing Container Apps environment in this resource group (same location).')
param containerAppsEnvironmentName string

@description('Relay node image, e.g. myregistry.azurecr.io/socketio-relay:1.0.')
param image string

@description('Registry login server to pull from with the node identity (needs AcrPull, granted outside this template). Empty for public images.')
param registryServer string = ''

@description('Port the relay listens on inside the container.')
param targetPort int = 8000

@description('Ops port inside the container (RELAY_OPS_PORT): /metrics and /readyz are served there only, not through the public ingress; the readiness probe uses it.')
param opsPort int = 9100

@description('Logical region name (RELAY_REGION and key in SIO_REGION_MAP).')
param regionName string

@description('Node id; with subscriptionAccess preProvisioned it must match the pre-provisioned subscription node-<nodeId>.')
param nodeId string

@description('Existing Service Bus namespace of the region (same resource group).')
param serviceBusNamespaceName string

@description('''
dataOwner: the node creates (and auto-deletes) its own subscription, so it gets Azure Service Bus Data Owner on the namespace;
the app may scale out and every replica is its own node (RELAY_NODE_ID unset: the node derives a unique id).
preProvisioned: the subscription node-<nodeId> already exists; the node gets Data Sender on the topic and Data Receiver
on that subscription only; exactly one replica and RELAY_NODE_ID=<nodeId>.
''')
@allowed([
  'dataOwner'
  'preProvisioned'
])
param subscriptionAccess string = 'dataOwner'

@description('Replica upper bound in dataOwner mode (preProvisioned is always exactly 1).')
@minValue(1)
@maxValue(30)
param maxReplicas int = 3

@secure()
@minLength(32)
@description('History token key (SIO_HISTORY_TOKEN_KEY), shared with the Function App: the node signs history tokens for its sockets.')
param historyTokenKey string

@secure()
@description('Cloud trust zone key (SIO_ZONE_KEY), shared with the Function App: the node signs what it sends; empty = zones off.')
param cloudZoneKey string = ''

@description('Zone document (SIO_ZONES): public keys and policy of the on-premise sites.')
param zonesDocument string = ''

@description('Public URL of the Function App history API the demo page calls (RELAY_HISTORY_URL).')
param historyUrl string = ''

// ---- client auth: required, unless allowAnonymousClients says otherwise (docs/security.md)

@secure()
@description('HS256 secret (>= 32 characters) the clients\' JWTs are signed with (RELAY_AUTH_JWT_KEY, a Container Apps secret). Give it or authJwtPublicKey, with authJwtIssuer and authJwtAudience.')
param authJwtKey string = ''

@description('PEM public key of the identity provider that signs the clients\' RS256 JWTs (RELAY_AUTH_JWT_PUBLIC_KEY). Give it or authJwtKey.')
param authJwtPublicKey string = ''

@description('Required JWT iss claim (RELAY_AUTH_JWT_ISSUER); needed with authJwtKey or authJwtPublicKey.')
param authJwtIssuer string = ''

@description('Required JWT aud claim (RELAY_AUTH_JWT_AUDIENCE); needed with authJwtKey or authJwtPublicKey.')
param authJwtAudience string = ''

@description('''
true = deploy WITHOUT client auth: anyone on the internet who reaches the relay's public URL may connect,
join any room the app's authorize_room hook allows (the demo app: every room), chat, and ask for history
tokens of those rooms (history from the time they joined). Only for a public demo; a deployment without it
must give authJwtKey or authJwtPublicKey with authJwtIssuer and authJwtAudience, or it fails at validation.
''')
param allowAnonymousClients bool = false

@description('CPU cores per replica.')
param cpu string = '0.5'

@description('Memory per replica.')
param memory string = '1Gi'

var jwtKeyGiven = !empty(authJwtKey)
var jwtPublicKeyGiven = !empty(authJwtPublicKey)
// Evaluated at validation (the tag below uses it), before any resource is created.
var clientAuthMode = allowAnonymousClients
  ? 'anonymous'
  : !(jwtKeyGiven || jwtPublicKeyGiven)
      ? fail('Client auth is required: set authJwtKey or authJwtPublicKey with authJwtIssuer and authJwtAudience, or set allowAnonymousClients=true to let anyone on the internet connect (docs/security.md).')
      : jwtKeyGiven && length(authJwtKey) < 32
          ? fail('authJwtKey must be at least 32 characters long.')
          : empty(authJwtIssuer) || empty(authJwtAudience)
              ? fail('Client auth needs authJwtIssuer and authJwtAudience too: without them any token signed with the key is accepted, whoever it was issued for.')
              : 'jwt'

var topology = loadJsonContent('../../socketio_servicebus/topology.json')
var preProvisioned = subscriptionAccess == 'preProvisioned'
var receiverRoleId = topology.roles.serviceBusDataReceiver
var senderRoleId = topology.roles.serviceBusDataSender
var ownerRoleId = topology.roles.serviceBusDataOwner

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}'
  location: location
  tags: tags
}

resource managedEnvironment 'Microsoft.App/managedEnvironments@2024-03-01' existing = {
  name: containerAppsEnvironmentName
}

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: serviceBusNamespaceName

  resource topic 'topics' existing = {
    name: topology.topic

    resource nodeSubscription 'subscriptions' existing = {
      name: '${topology.nodeSubscription.prefix}${nodeId}'
    }
  }
}

resource ownerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!preProvisioned) {
  name: guid(namespace.id, identity.id, ownerRoleId)
  scope: namespace
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ownerRoleId)
  }
}

resource senderRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (preProvisioned) {
  name: guid(namespace::topic.id, identity.id, senderRoleId)
  scope: namespace::topic
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', senderRoleId)
  }
}

resource receiverRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (preProvisioned) {
  name: guid(namespace::topic::nodeSubscription.id, identity.id, receiverRoleId)
  scope: namespace::topic::nodeSubscription
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', receiverRoleId)
  }
}

// Names are relay_node/config.py's ENV_VARS (tests/infra checks that each one exists there).
var baseEnv = [
  {
    name: 'SERVICEBUS_FULLY_QUALIFIED_NAMESPACE'
    value: split(split(namespace.properties.serviceBusEndpoint, '/')[2], ':')[0]
  }
  {
    name: 'SERVICEBUS_TOPIC'
    value: topology.topic
  }
  {
    name: 'RELAY_REGION'
    value: regionName
  }
  {
    // DefaultAzureCredential / ManagedIdentityCredential pick the user-assigned identity from this.
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    name: 'RELAY_HOST'
    value: '0.0.0.0'
  }
  {
    name: 'RELAY_PORT'
    value: string(targetPort)
  }
  {
    // /metrics and /readyz off the public port (the ingress forwards targetPort only)
    name: 'RELAY_OPS_PORT'
    value: string(opsPort)
  }
  {
    // a Container Apps secret (below), not a plain value
    name: 'SIO_HISTORY_TOKEN_KEY'
    secretRef: 'history-token-key'
  }
  {
    name: 'RELAY_HISTORY_URL'
    value: historyUrl
  }
]

// trust zones: the cloud zone's key as a Container Apps secret, the (public) zone document as a value
var zoneEnv = empty(cloudZoneKey) ? [] : concat([
  {
    name: 'SIO_ZONE'
    value: 'cloud'
  }
  {
    name: 'SIO_ZONE_KEY'
    secretRef: 'cloud-zone-key'
  }
], empty(zonesDocument) ? [] : [
  {
    name: 'SIO_ZONES'
    value: zonesDocument
  }
])

// client auth (none with allowAnonymousClients=true)
var authEnv = concat(
  jwtKeyGiven ? [{ name: 'RELAY_AUTH_JWT_KEY', secretRef: 'auth-jwt-key' }] : [],
  jwtPublicKeyGiven ? [{ name: 'RELAY_AUTH_JWT_PUBLIC_KEY', value: authJwtPublicKey }] : [],
  empty(authJwtIssuer) ? [] : [{ name: 'RELAY_AUTH_JWT_ISSUER', value: authJwtIssuer }],
  empty(authJwtAudience) ? [] : [{ name: 'RELAY_AUTH_JWT_AUDIENCE', value: authJwtAudience }]
)

// pre-provisioned: a fixed node id reading its own subscription (no Manage right needed);
// otherwise every replica makes up its own id and creates node-<id> itself (Data Owner role)
var preProvisionedEnv = [
  {
    name: 'RELAY_NODE_ID'
    value: nodeId
  }
  {
    name: 'RELAY_SUBSCRIPTION'
    value: '${topology.nodeSubscription.prefix}${nodeId}'
  }
]

resource relay 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  tags: union(tags, { 'sio-region': regionName, 'sio-node': nodeId, 'sio-client-auth': clientAuthMode })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    managedEnvironmentId: managedEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      // Sticky sessions require single revision mode.
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: targetPort
        transport: 'auto'
        allowInsecure: false
        stickySessions: {
          affinity: 'sticky'
        }
      }
      registries: empty(registryServer) ? [] : [{ server: registryServer, identity: identity.id }]
      secrets: concat([
        {
          name: 'history-token-key'
          value: historyTokenKey
        }
      ], jwtKeyGiven ? [{ name: 'auth-jwt-key', value: authJwtKey }] : [], empty(cloudZoneKey) ? [] : [
        {
          name: 'cloud-zone-key'
          value: cloudZoneKey
        }
      ])
    }
    template: {
      containers: [
        {
          name: 'relay'
          image: image
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          env: concat(preProvisioned ? concat(baseEnv, preProvisionedEnv) : baseEnv, authEnv, zoneEnv)
          probes: [
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: targetPort
              }
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: opsPort
              }
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: preProvisioned ? 1 : maxReplicas
      }
    }
  }
  dependsOn: [
    ownerRole
    senderRole
    receiverRole
  ]
}

output name string = relay.name
output uri string = 'https://${relay.properties.configuration.ingress.fqdn}'
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
