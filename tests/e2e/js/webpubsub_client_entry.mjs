// Bundled by esbuild (a dev dependency) into one browser script for webpubsub_page.html: the
// official @azure/web-pubsub-client from node_modules, exposed as the global `AzureWebPubSub`.
export { WebPubSubClient, WebPubSubJsonProtocol, WebPubSubJsonReliableProtocol } from "@azure/web-pubsub-client";
