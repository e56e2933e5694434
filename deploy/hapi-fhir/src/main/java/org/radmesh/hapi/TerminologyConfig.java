package org.radmesh.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.config.JpaConfig;
import jakarta.annotation.PostConstruct;
import java.util.List;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.r4.model.CodeSystem;
import org.hl7.fhir.r4.model.CodeSystem.ConceptDefinitionComponent;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.context.annotation.Configuration;

/**
 * Codes of HL7 Terminology (THO) that are newer than the copy of a code system bundled with
 * R4 core (4.0.1, 2019) and that the HL7 AI Transparency on FHIR IG uses: the security label
 * {@code AIAST} ("artificial intelligence asserted") of v3-ObservationValue. A production HAPI
 * installs the {@code hl7.terminology.r4} package for this; packages cannot be downloaded here,
 * so the server adds these codes to R4 core's own copy of the code system (every other code of
 * it stays valid, and unknown codes stay errors).
 */
@Configuration
public class TerminologyConfig {

	static final String OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

	/** Where THO places the integrity labels "asserted by ..." (the first one R4 core has wins). */
	private static final List<String> ASSERTED_BY_PARENTS = List.of(
			"_SecurityIntegrityProvenanceAssertedByObservationValue",
			"_SecurityIntegrityProvenanceObservationValue",
			"_SecurityIntegrityObservationValue",
			"_SecurityObservationValue");

	private record ThoCode(String code, String display, String definition) {}

	private static final List<ThoCode> THO_CODES = List.of(
			new ThoCode("AIAST", "artificial intelligence asserted",
					"Security metadata observation value used to indicate that the IT resource"
							+ " was asserted by an artificial intelligence (THO v3-ObservationValue)."),
			new ThoCode("CLINAST", "clinician asserted",
					"Security metadata observation value used to indicate that the IT resource"
							+ " was asserted by a clinician (THO v3-ObservationValue)."));

	private static final Logger LOG = LoggerFactory.getLogger(TerminologyConfig.class);

	private final FhirContext fhirContext;
	private final IValidationSupport validationChain;
	private final DefaultProfileValidationSupport coreDefinitions;

	public TerminologyConfig(
			FhirContext fhirContext,
			@Qualifier(JpaConfig.JPA_VALIDATION_SUPPORT_CHAIN) IValidationSupport validationChain,
			@Qualifier(JpaConfig.DEFAULT_PROFILE_VALIDATION_SUPPORT)
					DefaultProfileValidationSupport coreDefinitions) {
		this.fhirContext = fhirContext;
		this.validationChain = validationChain;
		this.coreDefinitions = coreDefinitions;
	}

	@PostConstruct
	void addThoCodes() {
		CodeSystem core = (CodeSystem) coreDefinitions.fetchCodeSystem(OBSERVATION_VALUE);
		if (core == null) {
			throw new IllegalStateException("R4 core does not define " + OBSERVATION_VALUE);
		}
		CodeSystem extended = core.copy();
		ConceptDefinitionComponent parent = ASSERTED_BY_PARENTS.stream()
				.map(code -> find(extended.getConcept(), code))
				.filter(java.util.Objects::nonNull)
				.findFirst()
				.orElse(null);
		int added = 0;
		for (ThoCode tho : THO_CODES) {
			if (find(extended.getConcept(), tho.code()) != null) {
				continue;
			}
			ConceptDefinitionComponent concept = parent != null ? parent.addConcept() : extended.addConcept();
			concept.setCode(tho.code()).setDisplay(tho.display()).setDefinition(tho.definition());
			added++;
		}
		PrePopulatedValidationSupport support = new PrePopulatedValidationSupport(fhirContext);
		support.addCodeSystem(extended);
		if (!(validationChain instanceof ValidationSupportChain chain)) {
			throw new IllegalStateException("unexpected validation chain " + validationChain.getClass());
		}
		chain.addValidationSupport(0, support);
		chain.invalidateCaches();
		LOG.info("v3-ObservationValue: {} THO code(s) added to R4 core's copy (under {})", added,
				parent != null ? parent.getCode() : "the top level");
	}

	private static ConceptDefinitionComponent find(List<ConceptDefinitionComponent> concepts, String code) {
		for (ConceptDefinitionComponent concept : concepts) {
			if (code.equals(concept.getCode())) {
				return concept;
			}
			ConceptDefinitionComponent inner = find(concept.getConcept(), code);
			if (inner != null) {
				return inner;
			}
		}
		return null;
	}
}
