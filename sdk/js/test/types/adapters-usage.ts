// Compile-only check (tsc --noEmit -p tsconfig.adapters.json): the React Native and Expo
// adapters accept the real modules' types, as an app would pass them.
import * as Keychain from 'react-native-keychain';
import * as SecureStore from 'expo-secure-store';
import { KeygateClient, MemoryTokenStore } from '../../src/index.js';
import { KeychainTokenStore, NativeKeyStore, type NativeDpopKeyModule } from '../../src/react-native.js';
import { SecureStoreTokenStore } from '../../src/expo.js';

declare const NativeModules: { KeygateDpopKey: NativeDpopKeyModule };

export function reactNativeClient(): KeygateClient {
  return new KeygateClient({
    baseUrl: 'https://gate.example.com',
    clientId: 'ios-app',
    redirectUri: 'com.example.app:/oauth/callback',
    scopes: ['ai'],
    keyStore: new NativeKeyStore(NativeModules.KeygateDpopKey),
    tokenStore: new KeychainTokenStore(Keychain, { service: 'com.example.app.keygate' }),
  });
}

export function expoClient(): KeygateClient {
  return new KeygateClient({
    baseUrl: 'https://gate.example.com',
    clientId: 'expo-app',
    redirectUri: 'com.example.app:/oauth/callback',
    keyStore: new NativeKeyStore(NativeModules.KeygateDpopKey, { signatureFormat: 'der' }),
    tokenStore: new SecureStoreTokenStore(SecureStore),
  });
}

export const unused = new MemoryTokenStore();
