package org.radmesh.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.rest.api.server.SystemRequestDetails;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.hl7.fhir.instance.model.api.IBaseConformance;
import org.hl7.fhir.r4.model.Basic;
import org.hl7.fhir.r4.model.CanonicalType;
import org.hl7.fhir.r4.model.CapabilityStatement;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.ApplicationArguments;
import org.springframework.boot.ApplicationRunner;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.io.Resource;
import org.springframework.core.io.support.PathMatchingResourcePatternResolver;

/**
 * The Subscriptions R5 Backport IG (R4) on the development server. HAPI 8.8 matches and delivers
 * R4 topic-based Subscriptions (topics as {@code Basic} resources) but neither defines a topic nor
 * says in its CapabilityStatement that it can; a hospital's server would do both. Here:
 *
 * <ul>
 *   <li>the topics in {@code classpath:topics/*.json} (radmesh's "imaging study available") are
 *       stored at start-up through the DAO: the R4 request validator has no definitions of the
 *       cross-version extensions a {@code Basic} topic is made of, and would refuse them;
 *   <li>the CapabilityStatement instantiates the IG's R4 server statement, lists the backport
 *       Subscription profile as supported and names those topics (the IG's
 *       {@code capabilitystatement-subscriptiontopic-canonical} extension). HAPI generates the
 *       CapabilityStatement once and keeps it, so the topics named are the ones stored, not the
 *       ones its topic cache has loaded yet: a Subscription made in the first minute after a
 *       fresh start may miss the events of that minute (HAPI loads a new topic within about 60 s).
 * </ul>
 */
@Configuration
public class BackportConfig {

	static final String BACKPORT_SERVER_R4 =
			"http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4";
	static final String BACKPORT_SUBSCRIPTION =
			"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";
	static final String TOPIC_URL =
			"http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.url";
	static final String TOPIC_CANONICAL =
			"http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical";

	private static final Logger LOG = LoggerFactory.getLogger(BackportConfig.class);

	/** radmesh's topics, as {@code Basic} resources (classpath:topics/*.json). */
	static List<Basic> topics(FhirContext context) throws IOException {
		List<Basic> topics = new ArrayList<>();
		for (Resource file :
				new PathMatchingResourcePatternResolver().getResources("classpath:topics/*.json")) {
			try (InputStream stream = file.getInputStream()) {
				topics.add(context.newJsonParser().parseResource(
						Basic.class, new String(stream.readAllBytes(), StandardCharsets.UTF_8)));
			}
		}
		return topics;
	}

	static String topicUrl(Basic topic) {
		return topic.getExtensionString(TOPIC_URL);
	}

	@Bean
	public ApplicationRunner storeSubscriptionTopics(DaoRegistry daoRegistry, FhirContext context) {
		return (ApplicationArguments arguments) -> {
			for (Basic topic : topics(context)) {
				daoRegistry.getResourceDao(Basic.class).update(topic, new SystemRequestDetails());
				LOG.info("subscription topic stored: {}", topicUrl(topic));
			}
		};
	}

	@Bean
	public BackportCapabilities backportCapabilities(FhirContext context) throws IOException {
		return new BackportCapabilities(topics(context).stream().map(BackportConfig::topicUrl).toList());
	}

	/** Adds the IG's advertisement to the CapabilityStatement HAPI generates. */
	@Interceptor
	public static class BackportCapabilities {
		private final List<String> topicUrls;

		BackportCapabilities(List<String> topicUrls) {
			this.topicUrls = topicUrls;
		}

		@Hook(Pointcut.SERVER_CAPABILITY_STATEMENT_GENERATED)
		public void advertise(IBaseConformance conformance) {
			CapabilityStatement statement = (CapabilityStatement) conformance;
			statement.addInstantiates(BACKPORT_SERVER_R4);
			for (CapabilityStatement.CapabilityStatementRestComponent rest : statement.getRest()) {
				for (CapabilityStatement.CapabilityStatementRestResourceComponent resource :
						rest.getResource()) {
					if (!"Subscription".equals(resource.getType())) {
						continue;
					}
					resource.addSupportedProfile(BACKPORT_SUBSCRIPTION);
					topicUrls.forEach(url -> resource.addExtension(TOPIC_CANONICAL, new CanonicalType(url)));
				}
			}
		}
	}
}
