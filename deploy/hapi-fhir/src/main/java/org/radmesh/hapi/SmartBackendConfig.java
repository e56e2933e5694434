package org.radmesh.hapi;

import com.fasterxml.jackson.databind.ObjectMapper;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.catalina.connector.Connector;
import org.apache.coyote.AbstractProtocol;
import org.apache.coyote.http11.AbstractHttp11Protocol;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.autoconfigure.web.ServerProperties;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.boot.web.embedded.tomcat.TomcatServletWebServerFactory;
import org.springframework.boot.web.server.WebServerFactoryCustomizer;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.util.unit.DataSize;

/**
 * SMART Backend Services (client credentials with a signed JWT assertion) on the development
 * server. The FHIR servlet is served on a second HTTP port, {@code radmesh.fhir.smart.port} (8081),
 * where {@link SmartBackendAuthInterceptor} requires an access token of the development Keycloak
 * with the SMART v2 system scopes; the first port (8080) stays open, as the tests and sample
 * loaders use it. {@code /fhir/.well-known/smart-configuration} tells a client where to get a
 * token, on both ports.
 */
@Configuration
@EnableConfigurationProperties(SmartBackendProperties.class)
public class SmartBackendConfig {

	static final String WELL_KNOWN_PATH = "/fhir/.well-known/smart-configuration";

	private static final Logger LOG = LoggerFactory.getLogger(SmartBackendConfig.class);

	/** The second Tomcat connector: same address, limits as the first one, the same servlets. */
	@Bean
	public WebServerFactoryCustomizer<TomcatServletWebServerFactory> smartBackendConnector(
			SmartBackendProperties smart, ServerProperties server) {
		return factory -> {
			if (!smart.enabled()) {
				LOG.info("SMART Backend Services: no second port (radmesh.fhir.smart.port = {})", smart.port());
				return;
			}
			Integer openPort = server.getPort();
			if (openPort != null && openPort == smart.port()) {
				throw new IllegalStateException("RADMESH_FHIR_SMART_PORT must differ from RADMESH_FHIR_PORT ("
						+ openPort + ")");
			}
			Connector connector = new Connector(TomcatServletWebServerFactory.DEFAULT_PROTOCOL);
			connector.setPort(smart.port());
			connector.setThrowOnFailure(true);
			if (connector.getProtocolHandler() instanceof AbstractProtocol<?> protocol && server.getAddress() != null) {
				protocol.setAddress(server.getAddress());
			}
			ServerProperties.Tomcat tomcat = server.getTomcat();
			connector.setMaxPostSize(toInt(tomcat.getMaxHttpFormPostSize()));
			if (connector.getProtocolHandler() instanceof AbstractHttp11Protocol<?> http) {
				http.setMaxSwallowSize(toInt(tomcat.getMaxSwallowSize()));
			}
			factory.addAdditionalTomcatConnectors(connector);
		};
	}

	@Bean
	public SmartBackendAuthInterceptor smartBackendAuthInterceptor(SmartBackendProperties smart) {
		return new SmartBackendAuthInterceptor(smart);
	}

	/** {@code GET /fhir/.well-known/smart-configuration} (exact mapping, ahead of HAPI's /fhir/*). */
	@Bean
	public ServletRegistrationBean<SmartConfigurationServlet> smartConfigurationServlet(SmartBackendProperties smart) {
		ServletRegistrationBean<SmartConfigurationServlet> registration =
				new ServletRegistrationBean<>(new SmartConfigurationServlet(smart), WELL_KNOWN_PATH);
		registration.setName("smart-configuration");
		return registration;
	}

	private static int toInt(DataSize size) {
		return size == null ? -1 : (int) Math.min(Integer.MAX_VALUE, size.toBytes());
	}

	/** SMART App Launch 2.x discovery, as far as Backend Services need it. */
	static final class SmartConfigurationServlet extends HttpServlet {
		private final byte[] body;

		SmartConfigurationServlet(SmartBackendProperties smart) {
			Map<String, Object> configuration = new LinkedHashMap<>();
			configuration.put("token_endpoint", smart.tokenUrl());
			configuration.put("token_endpoint_auth_methods_supported", List.of("private_key_jwt"));
			configuration.put("token_endpoint_auth_signing_alg_values_supported", List.of("RS384", "ES384"));
			configuration.put("grant_types_supported", List.of("client_credentials"));
			configuration.put("scopes_supported", List.of(
					SmartBackendAuthInterceptor.READ_SCOPE, SmartBackendAuthInterceptor.WRITE_SCOPE));
			configuration.put("capabilities", List.of("client-confidential-asymmetric"));
			try {
				body = new ObjectMapper().writerWithDefaultPrettyPrinter().writeValueAsBytes(configuration);
			} catch (IOException e) {
				throw new IllegalStateException(e);
			}
		}

		@Override
		protected void doGet(HttpServletRequest request, HttpServletResponse response) throws IOException {
			response.setStatus(HttpServletResponse.SC_OK);
			response.setContentType("application/json");
			response.setCharacterEncoding(StandardCharsets.UTF_8.name());
			response.setContentLength(body.length);
			response.getOutputStream().write(body);
		}
	}
}
