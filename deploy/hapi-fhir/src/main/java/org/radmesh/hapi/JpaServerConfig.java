package org.radmesh.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import jakarta.persistence.EntityManagerFactory;
import java.util.Properties;
import javax.sql.DataSource;
import org.hl7.fhir.dstu2.model.Subscription.SubscriptionChannelType;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/** Storage: HAPI's settings, the database (H2 file or PostgreSQL) and HAPI's JPA wiring. */
@Configuration
@EnableConfigurationProperties(RadmeshFhirProperties.class)
public class JpaServerConfig {

	@Bean
	public JpaStorageSettings storageSettings() {
		JpaStorageSettings settings = new JpaStorageSettings();
		// HAPI's defaults that radmesh relies on, stated so that nobody turns them off unawares.
		settings.setEnforceReferentialIntegrityOnWrite(true);
		settings.setEnforceReferentialIntegrityOnDelete(true);
		settings.setAutoCreatePlaceholderReferenceTargets(false);
		settings.setAllowInlineMatchUrlReferences(true);
		// Every search is answered from the database: a cached result would hide a resource that
		// was written a moment ago from a client polling for it (HAPI caches for 60 s by default).
		settings.setReuseCachedSearchResultsForMillis(null);
		settings.setExpungeEnabled(true);
		settings.setDeleteExpungeEnabled(true);
		settings.setAllowMultipleDelete(true);
		// A Provenance's targets are stored at the versions written (in a transaction: those it
		// writes), so radmesh's services need no second PUT to pin them (shared/provenance.py
		// still pins them on a server that does not).
		settings.setAutoVersionReferenceAtPaths("Provenance.target");
		return settings;
	}

	@Bean
	public SubscriptionSettings subscriptionSettings(RadmeshFhirProperties properties) {
		SubscriptionSettings settings = new SubscriptionSettings();
		settings.addSupportedSubscriptionType(SubscriptionChannelType.RESTHOOK);
		// a new or changed Subscription is activated at once, not at the next poll
		settings.setSubscriptionChangeQueuedImmediately(true);
		settings.setSubscriptionIntervalInMs(properties.subscriptionPollMillis());
		return settings;
	}

	/** Only rest-hook channels are enabled; HAPI's delivery factory still wants an email sender. */
	@Bean
	public IEmailSender emailSender() {
		return details -> {
			throw new UnsupportedOperationException("email Subscriptions are not enabled on this server");
		};
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			DataSource dataSource,
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			RadmeshFhirProperties properties) {
		LocalContainerEntityManagerFactoryBean factory =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		factory.setPersistenceUnitName("HAPI_PU");
		factory.setDataSource(dataSource);
		factory.setJpaProperties(hibernateProperties(properties.database()));
		return factory;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		return new JpaTransactionManager(entityManagerFactory);
	}

	private static Properties hibernateProperties(String database) {
		Properties properties = new Properties();
		properties.put("hibernate.dialect", switch (database) {
			case "h2" -> HapiFhirH2Dialect.class.getName();
			case "postgresql" -> HapiFhirPostgresDialect.class.getName();
			default -> throw new IllegalArgumentException(
					"radmesh.fhir.database must be h2 or postgresql, not " + database);
		});
		properties.put("hibernate.hbm2ddl.auto", "update");
		properties.put("hibernate.jdbc.batch_size", "20");
		properties.put("hibernate.format_sql", "false");
		properties.put("hibernate.show_sql", "false");
		properties.put("hibernate.cache.use_query_cache", "false");
		properties.put("hibernate.cache.use_second_level_cache", "false");
		properties.put("hibernate.cache.use_structured_entries", "false");
		properties.put("hibernate.cache.use_minimal_puts", "false");
		properties.put("hibernate.search.enabled", "false");
		return properties;
	}
}
