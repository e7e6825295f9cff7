metadata description = 'Azure Web PubSub with local (access key) auth disabled, one hub, and Web PubSub Service Owner for the given principals.'

@description('Web PubSub resource name.')
param name string

@description('Azure location.')
param location string = resourceGroup().location

@description('Resource tags.')
param tags object = {}

@description('SKU: Free_F1 (1 unit, 20 connections, no SLA), Standard_S1 or Premium_P1.')
@allowed([
  'Free_F1'
  'Standard_S1'
  'Premium_P1'
])
param skuName string = 'Free_F1'

@description('Units (Free_F1 allows only 1).')
@minValue(1)
param capacity int = 1

@description('Hub to create.')
param hubName string

@description('Principals that get Web PubSub Service Owner on the resource.')
param serviceOwnerPrincipalIds string[] = []

@description('Role definition id (GUID) of Web PubSub Service Owner.')
param serviceOwnerRoleId string

resource webPubSub 'Microsoft.SignalRService/webPubSub@2024-03-01' = {
  name: name
  location: location
  tags: tags
  kind: 'WebPubSub'
  sku: {
    name: skuName
    capacity: skuName == 'Free_F1' ? 1 : capacity
  }
  properties: {
    disableLocalAuth: true
    disableAadAuth: false
    publicNetworkAccess: 'Enabled'
    tls: {
      clientCertEnabled: false
    }
  }
}

resource hub 'Microsoft.SignalRService/webPubSub/hubs@2024-03-01' = {
  parent: webPubSub
  name: hubName
  properties: {
    anonymousConnectPolicy: 'deny'
    eventHandlers: []
  }
}

resource serviceOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principalId in serviceOwnerPrincipalIds: {
    name: guid(webPubSub.id, principalId, serviceOwnerRoleId)
    scope: webPubSub
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceOwnerRoleId)
    }
  }
]

output id string = webPubSub.id
output name string = webPubSub.name
output endpoint string = 'https://${webPubSub.properties.hostName}'
output hubName string = hub.name
