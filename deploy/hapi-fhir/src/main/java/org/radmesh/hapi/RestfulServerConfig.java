package org.radmesh.hapi;

import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.interceptor.api.IInterceptorBroadcaster;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.delete.ThreadSafeResourceDeleterSvc;
import ca.uhn.fhir.jpa.interceptor.CascadingDeleteInterceptor;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.validation.IInstanceValidatorModule;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.ValidationResult;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * The REST layer: HAPI's RestfulServer at /fhir/* with the JPA providers and interceptors, on both
 * HTTP ports (the second one, SMART Backend Services, requires access tokens: {@link SmartBackendConfig}).
 */
@Configuration
public class RestfulServerConfig {

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			@Qualifier("mySystemProviderR4") JpaSystemProvider<?, ?> systemProvider,
			ResourceProviderFactory resourceProviderFactory,
			DatabaseBackedPagingProvider pagingProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			@Qualifier("myInstanceValidator") IInstanceValidatorModule instanceValidator,
			DaoRegistry daoRegistry,
			IInterceptorBroadcaster interceptorBroadcaster,
			ThreadSafeResourceDeleterSvc resourceDeleter,
			BackportConfig.BackportCapabilities backportCapabilities,
			SmartBackendAuthInterceptor smartBackendAuth,
			RadmeshFhirProperties properties) {
		// Provenance.target names the versions an activity produced (radmesh pins them after each
		// transaction: shared/provenance.py); HAPI strips versions from the references it stores
		// unless told where not to.
		systemDao.getContext().getParserOptions().setDontStripVersionsFromReferencesAtPaths("Provenance.target");
		RestfulServer server = new RestfulServer(systemDao.getContext());
		server.setServerName("HAPI FHIR Server (radmesh development)");
		server.registerProviders(resourceProviderFactory.createProviders());
		server.registerProvider(systemProvider);
		server.setPagingProvider(pagingProvider);
		server.setServerConformanceProvider(new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport));
		server.setDefaultResponseEncoding(ca.uhn.fhir.rest.api.EncodingEnum.JSON);
		// Access tokens on the SMART Backend Services port (only there), ahead of request validation
		server.registerInterceptor(smartBackendAuth);
		// DELETE ...?_cascade=delete removes a resource with everything that refers to it
		server.registerInterceptor(new CascadingDeleteInterceptor(
				systemDao.getContext(), daoRegistry, interceptorBroadcaster, resourceDeleter));
		server.registerInterceptor(backportCapabilities);
		if (properties.validateRequests()) {
			// A Subscription declares the Backport IG's profile (meta.profile is how HAPI tells a
			// topic-based Subscription); the IG's package is not installed, so a profile the
			// server does not know is checked against the base resource, not refused.
			if (instanceValidator instanceof FhirInstanceValidator fhirValidator) {
				fhirValidator.setErrorForUnknownProfiles(false);
			}
			RequestValidatingInterceptor validating = new ConformanceTolerantValidatingInterceptor();
			validating.addValidatorModule(instanceValidator);
			validating.setFailOnSeverity(ResultSeverityEnum.ERROR);
			validating.setAddResponseHeaderOnSeverity(null);
			validating.setResponseHeaderValueNoIssues(null);
			server.registerInterceptor(validating);
		}
		return server;
	}

	/**
	 * Request validation that does not refuse a StructureDefinition (radmesh publishes its
	 * extensions' definitions, with their snapshots, at start-up): HAPI 8.8's validator cannot
	 * regenerate the snapshot of any differential ("Unable to resolve package id
	 * hl7.fhir.r4.core#null") and would refuse every one. The resources that use a definition are
	 * validated against it as before.
	 */
	static final class ConformanceTolerantValidatingInterceptor extends RequestValidatingInterceptor {
		private static final Logger LOG = LoggerFactory.getLogger(ConformanceTolerantValidatingInterceptor.class);

		@Override
		protected void fail(RequestDetails theRequestDetails, ValidationResult theValidationResult) {
			if ("StructureDefinition".equals(theRequestDetails.getResourceName())) {
				LOG.info("StructureDefinition accepted despite validation messages: {}",
						theValidationResult.getMessages().size());
				return;
			}
			super.fail(theRequestDetails, theValidationResult);
		}
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer restfulServer) {
		ServletRegistrationBean<RestfulServer> registration =
				new ServletRegistrationBean<>(restfulServer, "/fhir/*");
		registration.setName("fhir");
		registration.setLoadOnStartup(1);
		return registration;
	}
}
