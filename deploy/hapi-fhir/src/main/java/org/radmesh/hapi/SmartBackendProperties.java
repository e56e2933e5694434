package org.radmesh.hapi;

import org.springframework.boot.context.properties.ConfigurationProperties;

/**
 * The second, token-protected port ({@code radmesh.fhir.smart.*} in application.yaml, each
 * overridable by an environment variable; see README.md and {@link SmartBackendConfig}).
 *
 * @param port the HTTP port where every FHIR request but {@code /metadata} needs a Keycloak access
 *     token ({@code RADMESH_FHIR_SMART_PORT}, 8081); 0 or less: no second port
 * @param issuer the tokens' {@code iss} ({@code RADMESH_FHIR_SMART_ISSUER})
 * @param jwksUrl where the issuer publishes its signing keys ({@code RADMESH_FHIR_SMART_JWKS_URL})
 * @param tokenUrl the token endpoint advertised in {@code .well-known/smart-configuration}
 *     ({@code RADMESH_FHIR_SMART_TOKEN_URL})
 */
@ConfigurationProperties(prefix = "radmesh.fhir.smart")
public record SmartBackendProperties(int port, String issuer, String jwksUrl, String tokenUrl) {

	public boolean enabled() {
		return port > 0;
	}
}
