metadata description = 'Linux Function App on the Flex Consumption plan (FC1), user-assigned identity, identity-based AzureWebJobsStorage and deployment container.'

@description('Function App name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure location (must offer Flex Consumption: az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Tags for the plan.')
param tags object = {}

@description('Tags for the site (azd adds azd-service-name here).')
param siteTags object = tags

@description('Resource id of the user-assigned identity used for storage, deployment and all identity-based connections.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Host storage account (AzureWebJobsStorage and deployment package container). Same resource group.')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Language runtime.')
param runtimeName string = 'python'

@description('Language runtime version.')
param runtimeVersion string = '3.11'

@description('Upper bound of instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Instance memory size in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Application settings (name -> value). AzureWebJobsStorage__* are added here. Flex Consumption rejects FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION: runtime and version come from functionAppConfig.')
@secure()
param appSettings object = {}

@description('Origins allowed by the platform CORS; empty = no CORS rule.')
param corsAllowedOrigins string[] = []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: siteTags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      cors: empty(corsAllowedOrigins) ? null : {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: false
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: runtimeName
        version: runtimeVersion
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, {
      AzureWebJobsStorage__accountName: storage.name
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
    })
  }
}

output id string = functionApp.id
output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
