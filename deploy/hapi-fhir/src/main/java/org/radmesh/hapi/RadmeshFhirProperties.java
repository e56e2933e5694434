package org.radmesh.hapi;

import org.springframework.boot.context.properties.ConfigurationProperties;

/**
 * The few settings radmesh's development server exposes ({@code radmesh.fhir.*} in
 * application.yaml, each overridable by an environment variable; see README.md).
 *
 * @param database {@code h2} (a file under the run directory) or {@code postgresql}
 * @param validateRequests validate every create, update and transaction against R4 core
 * @param subscriptionPollMillis how often HAPI hands matched resource changes to Subscription
 *     delivery: a rest-hook waits up to this long after its write
 */
@ConfigurationProperties(prefix = "radmesh.fhir")
public record RadmeshFhirProperties(String database, boolean validateRequests, long subscriptionPollMillis) {}
