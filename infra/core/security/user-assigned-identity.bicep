metadata description = 'User-assigned managed identity.'

@description('Name of the identity.')
param name string

@description('Azure location.')
param location string = resourceGroup().location

@description('Resource tags.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
