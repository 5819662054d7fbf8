// Compile-only check (tsc --noEmit -p tsconfig.adapters.json): the React Native and Expo
// adapters accept the real modules' types, as an app would pass them.
import * as Keychain from 'react-native-keychain';
import * as SecureStore from 'expo-secure-store';
import {
  KeygateClient,
  MemoryTokenStore,
  b64url,
  type AttestationEvidence,
  type AttestationProvider,
  type AttestationRequest,
} from '../../src/index.js';
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

/** The README's attestation sketch: a native App Attest / Play Integrity module behind the hook. */
declare const AppIntegrity: {
  attestNewKey(clientDataHash: string): Promise<{ keyId: string; attestation: string }>;
  generateAssertion(clientDataHash: string): Promise<string>;
  requestIntegrityToken(nonce: string): Promise<string>;
};
declare const os: 'ios' | 'android';

export function attestedClient(): KeygateClient {
  const attestation: AttestationProvider = async (req: AttestationRequest): Promise<AttestationEvidence | null> => {
    if (os === 'ios') {
      const hash = b64url(req.clientDataHash);
      if (req.grant === 'authorization_code') {
        const { keyId, attestation } = await AppIntegrity.attestNewKey(hash);
        return { type: 'apple-app-attest', keyId, attestation };
      }
      return { type: 'apple-app-attest', assertion: await AppIntegrity.generateAssertion(hash) };
    }
    return { type: 'play-integrity', attestation: await AppIntegrity.requestIntegrityToken(req.nonce) };
  };
  return new KeygateClient({
    baseUrl: 'https://gate.example.com',
    clientId: 'ios-app',
    redirectUri: 'com.example.app:/oauth/callback',
    keyStore: new NativeKeyStore(NativeModules.KeygateDpopKey),
    tokenStore: new KeychainTokenStore(Keychain, { service: 'com.example.app.keygate' }),
    attestation,
  });
}
